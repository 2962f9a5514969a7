#pragma once
// Starting a child process, the one way the proxy does it (the process scaler's backend, an exec
// credential plugin): stdin from /dev/null, stdout and stderr into pipes, its own process group
// (so that a stop or a timeout reaches what it started too), signals at their defaults, and none
// of the proxy's descriptors (a listening socket kept open in a child would accept connections
// after the proxy has closed it).
#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

namespace va {

struct ChildOptions {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH unless it has a '/'
  // Set in the child's environment, over the proxy's own.
  std::vector<std::pair<std::string, std::string>> env;
  bool stop_with_parent = false;  // SIGTERM when the proxy dies without stopping it
};

struct SpawnedChild {
  pid_t pid = -1;  // -1 when it could not be started
  int out = -1;    // read ends, close-on-exec, owned by the caller
  int err = -1;
  int error = 0;          // errno, when pid is -1
  const char* step = "";  // what failed: "pipe", "fork" or "exec"
};

SpawnedChild spawn_child(const ChildOptions& options);

// A pidfd for `pid` (close-on-exec), or -1 on kernels before 5.3.
int open_pidfd(pid_t pid);

}  // namespace va
