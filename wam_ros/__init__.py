"""wam_ros: World Action Models on real dual-arm robots."""

__version__ = "0.1.0"
