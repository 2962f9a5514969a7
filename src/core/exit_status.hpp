#pragma once
// A child process's wait status in words, for the messages users read ("process exited with
// status 3: ...", "exec credential plugin \"aws\" was killed by signal Killed").
#include <sys/wait.h>

#include <cstring>
#include <string>

namespace va {

inline std::string describe_exit_status(int status) {
  if (WIFEXITED(status)) {
    return "exited with status " + std::to_string(WEXITSTATUS(status));
  }
  if (WIFSIGNALED(status)) {
    return std::string("was killed by signal ") + strsignal(WTERMSIG(status));
  }
  return "ended";
}

}  // namespace va
