# The PyPI ROS wheels export *__rosidl_generator_py targets that carry the wheel builder's Python
# include path (/opt/python/...); point them at this interpreter's headers instead. Include it
# after the find_package calls of the message packages. No-op on apt installs.
find_package(Python3 REQUIRED COMPONENTS Interpreter Development NumPy)
get_directory_property(_imported_targets IMPORTED_TARGETS)
foreach(_target IN LISTS _imported_targets)
  get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
  if(_dirs AND "${_dirs}" MATCHES "/opt/python/")
    list(FILTER _dirs EXCLUDE REGEX "^/opt/python/")
    list(APPEND _dirs ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
    set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_dirs}")
  endif()
endforeach()
