"""Names for a reader of the paper: what tables, figures and legends print instead of internal ids.

Internal ids (``cnn``, ``htc``, ``labels=False``) stay in ``results.json``; only what is rendered
goes through these functions, e.g. ``series_label("htc", "cnn", "cnn")`` is
``"HTC: CNN student of a CNN teacher"`` and ``x_value_text("labels", False)`` is
``"labels: withheld"``.
"""

from __future__ import annotations

from typing import Any

ARCH_TITLES = {"cnn": "CNN", "resnet18": "ResNet-18", "resnet34": "ResNet-34",
               "resnet50": "ResNet-50", "mobilenetv2": "MobileNetV2",
               "shufflenetv2": "ShuffleNetV2", "generator": "DAFL generator"}

METHOD_TITLES = {"vanilla": "Vanilla", "normal-kd": "Normal KD", "nasty-kd": "Nasty KD",
                 "skeptical": "Skeptical", "htc": "HTC", "scm": "SCM",
                 "skeptical+htc": "Skeptical+HTC", "skeptical+scm": "Skeptical+SCM",
                 "dafl-kd": "DAFL KD", "dafl-htc": "DAFL HTC", "kd": "KD", "nasty": "Nasty teacher"}

#: How the value of a boolean ablation parameter reads: param -> {value: text}
_FLAGS = {"labels": {False: "labels: withheld", True: "labels: given"},
          "data_free": {True: "data: none (DAFL generator)", False: "data: training set"}}


def arch_title(arch: str) -> str:
    """``resnet18`` -> ``ResNet-18``; an unknown name is returned as it is."""
    return ARCH_TITLES.get(arch, arch)


def method_title(method: str) -> str:
    return METHOD_TITLES.get(method, method)


def series_label(method: str, student_arch: str, teacher_arch: str) -> str:
    """``HTC: CNN student of a CNN teacher``."""
    return (f"{method_title(method)}: {arch_title(student_arch)} student of a "
            f"{arch_title(teacher_arch)} teacher")


def x_value_text(param: str, value: Any) -> str:
    """The value of an ablation parameter as a table header or tick reads."""
    if isinstance(value, bool) and param in _FLAGS:
        return _FLAGS[param][value]
    if param == "fraction" and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{100 * value:g} %"
    if param == "sequence_arch" and isinstance(value, str):
        return arch_title(value)
    return str(value)



def model_title(name: str) -> str:
    """A Table 3 model: ``nasty`` -> ``Nasty teacher``, ``scm-ensemble (k=3)`` -> ``SCM ensemble
    (k=3)``; sequence models ``S2``, ``S3`` keep the paper's names."""
    if name == "nasty":
        return "Nasty teacher"
    if name.startswith("scm-ensemble"):
        return "SCM ensemble" + name[len("scm-ensemble"):]
    return name
