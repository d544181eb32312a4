"""The World Action Model (PyTorch, ROS-free).

Modules that need torch import it themselves; `config`, `targets` and `normalization` do not,
so recording/export code can build value targets and gate labels without torch.
"""
