# The target `zstd::zstd` that alspz's CMakeLists links to, made from the system's libzstd (Debian 12's zstd
# CMake package names its targets zstd::libzstd_shared / _static only). Used by `make setup-spz-reference`.
find_library(SHARP_ZSTD_LIBRARY NAMES zstd REQUIRED)
find_path(SHARP_ZSTD_INCLUDE zstd.h REQUIRED)
if(NOT TARGET zstd::zstd)
  add_library(zstd::zstd UNKNOWN IMPORTED)
  set_target_properties(zstd::zstd PROPERTIES
    IMPORTED_LOCATION "${SHARP_ZSTD_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${SHARP_ZSTD_INCLUDE}")
endif()
set(zstd_FOUND TRUE)
