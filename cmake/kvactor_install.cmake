# Installs kvactor for embedding: both libraries, their headers under
# include/kvactor, the default model where default_model_dir() looks for it
# (share/kvactor/models/default), FindCAF.cmake and a package config, so
# that an outside project can find_package(kvactor). Everything is in the
# `kvactor_sdk` component, so `cmake --install <build> --component
# kvactor_sdk` installs just this.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
set(kvactor_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/kvactor)

install(TARGETS kvactor_runtime kvactor_actors EXPORT kvactorTargets COMPONENT kvactor_sdk
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/runtime ${PROJECT_SOURCE_DIR}/actors ${PROJECT_SOURCE_DIR}/kvactor
        DESTINATION include/kvactor COMPONENT kvactor_sdk
        FILES_MATCHING PATTERN "*.h")
install(DIRECTORY ${PROJECT_SOURCE_DIR}/models/default
        DESTINATION ${CMAKE_INSTALL_DATADIR}/kvactor/models COMPONENT kvactor_sdk)
install(EXPORT kvactorTargets NAMESPACE kvactor:: DESTINATION ${kvactor_cmake_dir} COMPONENT kvactor_sdk)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/kvactorConfig.cmake.in
  ${PROJECT_BINARY_DIR}/kvactorConfig.cmake INSTALL_DESTINATION ${kvactor_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/kvactorConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/kvactorConfig.cmake ${PROJECT_BINARY_DIR}/kvactorConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/FindCAF.cmake
        DESTINATION ${kvactor_cmake_dir} COMPONENT kvactor_sdk)
