# Installs kvactor into a fresh prefix, builds examples/embed against that
# install as an outside project would, and runs it on the installed model.
# Run with -DBUILD_DIR=<kvactor build> -DSOURCE_DIR=<kvactor source> -DWORK_DIR=<scratch>.
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}\n${err}")
  endif()
  set(output "${out}" PARENT_SCOPE)
endfunction()

run("install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix} --component kvactor_sdk)
run("configure" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/embed -B ${WORK_DIR}/build
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release)
run("build" ${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run("embed" ${CMAKE_COMMAND} -E env KVACTOR_DEFAULT_MODEL=${prefix}/share/kvactor/models/default
    ${WORK_DIR}/build/embed "The if statement is used for")
message("${output}")
if(NOT output MATCHES "\\[(stop|length)\\] prompt [0-9]+ tokens, completion [1-9][0-9]* tokens")
  message(FATAL_ERROR "embed printed no completed generation")
endif()
