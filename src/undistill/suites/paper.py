"""The paper's numbers, for tables that put ours beside theirs.

Transcribed from ../shared/paper (Tables 1, 3 and 6). The PDF extraction garbles parts of Table 6's
CIFAR-100 block: only the cells that read unambiguously are kept (its ShuffleNetV2 row and the
MobileNetV2 normal-teacher cell are left out).
"""

from __future__ import annotations

# Table 1: (dataset, teacher, student) -> column -> accuracy (%)
TABLE1_COLUMNS = ["vanilla", "normal-kd", "nasty-kd", "skeptical", "htc", "scm", "skeptical+htc",
                  "skeptical+scm"]
_T1 = {
    ("cifar10", "resnet18", "cnn"): [86.31, 87.83, 82.27, 86.71, 87.38, 87.85, 87.17, 87.04],
    ("cifar10", "resnet18", "mobilenetv2"): [89.58, 89.30, 31.73, 90.53, 90.03, 90.48, 91.45, 91.55],
    ("cifar10", "resnet18", "shufflenetv2"): [91.03, 91.17, 79.73, 91.34, 91.61, 91.93, 92.45, 92.76],
    ("cifar100", "resnet18", "cnn"): [58.38, 62.35, 58.62, 58.38, 61.21, 61.31, 59.64, 59.17],
    ("cifar100", "resnet18", "mobilenetv2"): [68.90, 72.75, 3.15, 66.89, 71.01, 71.06, 71.48, 71.74],
    ("cifar100", "resnet18", "shufflenetv2"): [71.43, 74.43, 63.67, 70.00, 74.04, 75.23, 73.78, 74.23],
    ("cifar100", "resnet50", "cnn"): [58.38, 61.84, 58.93, 59.15, 61.24, 59.58, 59.48, 59.17],
    ("cifar100", "resnet50", "mobilenetv2"): [68.90, 72.22, 3.03, 66.65, 70.49, 71.66, 71.54, 71.16],
    ("cifar100", "resnet50", "shufflenetv2"): [71.43, 73.91, 62.8, 70.02, 72.37, 73.25, 73.60, 74.73],
    ("tinyimagenet", "resnet18", "mobilenetv2"): [55.69, 61.00, 0.85, 47.37, 56.28, 61.01, 59.05,
                                                  58.88],
    ("tinyimagenet", "resnet18", "shufflenetv2"): [60.30, 63.45, 23.78, 54.78, 60.46, 62.09, 63.05,
                                                   62.28],
    ("tinyimagenet", "resnet50", "mobilenetv2"): [55.89, 57.84, 1.10, 48.21, 56.00, 59.46, 58.56,
                                                  58.88],
    ("tinyimagenet", "resnet50", "shufflenetv2"): [60.30, 62.02, 24.27, 56.08, 60.80, 61.55, 63.14,
                                                   61.92],
}
#: The two KD columns of Table 1 and the teacher each learns from; every other column is the
#: method of that name, learning from the teacher its traits say (none, the nasty teacher, or
#: the SCM sequence).
TABLE1_KD_COLUMNS = {"normal-kd": "normal", "nasty-kd": "nasty"}
TABLE1: dict[tuple[str, str, str], dict[str, float]] = {
    k: dict(zip(TABLE1_COLUMNS, v, strict=True)) for k, v in _T1.items()}

# Table 3: (dataset, teacher) -> KL divergence to the original teacher
TABLE3: dict[tuple[str, str], dict[str, float]] = {
    ("cifar10", "resnet18"): {"nasty": 0.4446, "scm-ensemble": 0.2471},
    ("cifar100", "resnet18"): {"nasty": 14.6363, "scm-ensemble": 5.8398},
    ("cifar100", "resnet50"): {"nasty": 10.4892, "scm-ensemble": 5.3165},
}

# Table 6: teacher accuracies, and KD students' accuracies per defended teacher
TABLE6_COLUMNS = ["normal", "nasty", "nasty-es", "scm-defence"]
TABLE6_TEACHER: dict[tuple[str, str], dict[str, float]] = {
    ("cifar10", "resnet18"): {"normal": 95.09, "nasty": 94.28, "nasty-es": 93.02,
                              "scm-defence": 92.99},
    ("cifar100", "resnet50"): {"normal": 77.96, "nasty": 77.4, "nasty-es": 76.2,
                               "scm-defence": 75.44},
}
TABLE6: dict[tuple[str, str, str], dict[str, float]] = {
    ("cifar10", "resnet18", "cnn"): {"normal": 85.99, "nasty": 82.27, "nasty-es": 84.62,
                                     "scm-defence": 80.13},
    ("cifar10", "resnet18", "mobilenetv2"): {"normal": 89.58, "nasty": 31.73, "nasty-es": 28.58,
                                             "scm-defence": 22.12},
    ("cifar10", "resnet18", "shufflenetv2"): {"normal": 91.03, "nasty": 79.73, "nasty-es": 87.81,
                                              "scm-defence": 73.23},
    ("cifar100", "resnet50", "cnn"): {"normal": 58.58, "nasty": 58.93, "nasty-es": 58.45,
                                      "scm-defence": 54.26},
    ("cifar100", "resnet50", "mobilenetv2"): {"nasty": 3.03, "nasty-es": 2.16, "scm-defence": 1.4},
}
