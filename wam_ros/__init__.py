"""wam_ros: World Action Models on real dual-arm robots."""

__version__ = "0.1.0"

# The messages (wam_ros.msg) are generated into the install prefix by the CMake build; when this
# package is imported from a source checkout, extend the package path so that they are found too.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
