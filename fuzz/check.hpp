#pragma once
// A fuzz target's own assertion: a broken property aborts (libFuzzer keeps the input as a crash),
// in every build type, with what broke.
#include <cstdio>
#include <cstdlib>
#include <string>

#define VA_FUZZ_CHECK(cond, what)                                                 \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "fuzz check failed: %s\n", std::string(what).c_str()); \
      std::abort();                                                               \
    }                                                                             \
  } while (false)
