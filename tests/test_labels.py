"""Labels written for a reader of the paper, in the tables and figures of a suite."""

from __future__ import annotations

from undistill.labels import arch_title, model_title, series_label, x_value_text
from undistill.suites.tables import ablation_tables


def test_names_read_as_in_the_paper() -> None:
    assert series_label("htc", "cnn", "cnn") == "HTC: CNN student of a CNN teacher"
    assert series_label("nasty-kd", "shufflenetv2", "resnet18") == (
        "Nasty KD: ShuffleNetV2 student of a ResNet-18 teacher")
    assert x_value_text("labels", False) == "labels: withheld"
    assert x_value_text("data_free", True) == "data: none (DAFL generator)"
    assert x_value_text("fraction", 0.1) == "10 %" and x_value_text("temperature", 4) == "4"
    assert x_value_text("sequence_arch", "mobilenetv2") == "MobileNetV2"
    assert arch_title("resnet50") == "ResNet-50" and arch_title("mystery") == "mystery"
    assert model_title("nasty") == "Nasty teacher"
    assert model_title("scm-ensemble (k=3)") == "SCM ensemble (k=3)" and model_title("S2") == "S2"


def test_ablation_table_shows_withheld_labels_not_false() -> None:
    doc = {"ablations": [{"name": "No labels (Table 5)", "param": "labels", "x_label": "labels",
                          "x_values": [False],
                          "series": {series_label("htc", "cnn", "cnn"): [60.7]}}]}
    text = "\n".join(ablation_tables(doc))
    assert "| labels: withheld |" in text and "False" not in text
    assert "| HTC: CNN student of a CNN teacher | 60.70 |" in text
