# Shared build policy: warnings, sanitizers, fuzzing, and helpers that declare tests.

option(UPKEEP_WERROR "Treat warnings as errors" ON)
option(UPKEEP_ASAN "Build with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
option(UPKEEP_TSAN "Build with ThreadSanitizer" OFF)
option(UPKEEP_FUZZ "Build libFuzzer targets (needs clang)" OFF)

if(UPKEEP_ASAN AND UPKEEP_TSAN)
  message(FATAL_ERROR "UPKEEP_ASAN and UPKEEP_TSAN cannot be combined")
endif()

# Every first-party target links this one interface target, so the warning policy lives here only.
add_library(upkeep_warnings INTERFACE)
target_compile_options(upkeep_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wsuggest-override
  -Wimplicit-fallthrough -Wformat=2 -Wcast-qual)
if(UPKEEP_WERROR)
  target_compile_options(upkeep_warnings INTERFACE -Werror)
endif()
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # g++ 12 at -O3 (CMAKE_BUILD_TYPE=Release) reports impossible overlaps in libstdc++'s
  # std::string concatenation (GCC bug 105329); with -Werror that would break Release builds.
  target_compile_options(upkeep_warnings INTERFACE -Wno-restrict)
endif()

set(UPKEEP_SANITIZER_FLAGS "")
if(UPKEEP_ASAN)
  set(UPKEEP_SANITIZER_FLAGS -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
elseif(UPKEEP_TSAN)
  set(UPKEEP_SANITIZER_FLAGS -fsanitize=thread -fno-omit-frame-pointer)
  # ASIO's atomic_thread_fence: g++ warns that TSan does not model fences (its reports there
  # are what to look at, not the build).
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    list(APPEND UPKEEP_SANITIZER_FLAGS -Wno-tsan)
  endif()
endif()
if(UPKEEP_FUZZ)
  list(APPEND UPKEEP_SANITIZER_FLAGS -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
endif()
if(UPKEEP_FUZZ)
  add_custom_target(fuzzers)
endif()

if(UPKEEP_SANITIZER_FLAGS)
  add_compile_options(${UPKEEP_SANITIZER_FLAGS})
  add_link_options(${UPKEEP_SANITIZER_FLAGS})
endif()

# upkeep_add_test(NAME SOURCES... LIBS...): one GoogleTest executable, registered with CTest.
function(upkeep_add_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS" ${ARGN})
  if(UPKEEP_FUZZ)
    return()
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} upkeep_warnings GTest::gtest GTest::gtest_main)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  target_compile_definitions(${name} PRIVATE
    UPKEEP_SOURCE_DIR="${CMAKE_SOURCE_DIR}" UPKEEP_BIN_DIR="${CMAKE_BINARY_DIR}/bin")
  add_test(NAME ${name} COMMAND ${name})
endfunction()

# upkeep_add_fuzzer(NAME SOURCE LIBS...): with UPKEEP_FUZZ a libFuzzer binary in build/bin;
# otherwise a regression test that replays the seed corpus tests/fuzz/corpus/NAME through the target.
function(upkeep_add_fuzzer name source)
  set(corpus ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${name})
  if(UPKEEP_FUZZ)
    add_executable(${name} ${source})
    target_link_libraries(${name} PRIVATE ${ARGN} upkeep_warnings)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
    add_dependencies(fuzzers ${name})
  else()
    add_executable(${name}_replay ${source} ${CMAKE_SOURCE_DIR}/tests/fuzz/replay_main.cpp)
    target_link_libraries(${name}_replay PRIVATE ${ARGN} upkeep_warnings)
    set_target_properties(${name}_replay PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
    add_test(NAME ${name}_replay COMMAND ${name}_replay ${corpus})
  endif()
endfunction()

# upkeep_use_asio(target): standalone ASIO, privately. Under TSan ASIO's fenced blocks are off:
# they use std::atomic_thread_fence, which TSan does not model (g++ refuses it under -Werror), and
# the scheduler's mutex already orders handler hand-offs.
function(upkeep_use_asio target)
  target_include_directories(${target} SYSTEM PRIVATE ${ASIO_INCLUDE_DIR})
  target_compile_definitions(${target} PRIVATE ASIO_STANDALONE ASIO_NO_DEPRECATED)
  if(UPKEEP_TSAN)
    target_compile_definitions(${target} PRIVATE ASIO_DISABLE_FENCED_BLOCK)
  endif()
endfunction()
