#include "core/child_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>

extern char** environ;

namespace va {
namespace {

std::vector<std::string> child_environment(const ChildOptions& options) {
  const auto overridden = [&](std::string_view name) {
    for (const auto& [k, v] : options.env) {
      if (k == name) {
        return true;
      }
    }
    return false;
  };
  std::vector<std::string> env;
  for (char** p = environ; *p != nullptr; ++p) {
    const std::string_view kv(*p);
    if (!overridden(kv.substr(0, kv.find('=')))) {
      env.emplace_back(kv);
    }
  }
  for (const auto& [k, v] : options.env) {
    env.push_back(k + "=" + v);
  }
  return env;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) {
    out.push_back(s.data());
  }
  out.push_back(nullptr);
  return out;
}

// In the child, between fork and exec: async-signal-safe calls only.
[[noreturn]] void become(const ChildOptions& options, pid_t parent, long max_fd, char** argv,
                         char** envp, const int out[2], const int err[2], int exec_err) {
  ::setpgid(0, 0);
  if (options.stop_with_parent) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) {
      ::_exit(127);
    }
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (const int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD}) {
    ::signal(sig, SIG_DFL);
  }
  const int devnull = ::open("/dev/null", O_RDONLY);
  ::dup2(devnull, 0);
  ::dup2(out[1], 1);
  ::dup2(err[1], 2);
  if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    for (long fd = 3; fd < max_fd; ++fd) {
      ::fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
    }
  }
  ::execvpe(argv[0], argv, envp);
  const int e = errno;
  [[maybe_unused]] auto n = ::write(exec_err, &e, sizeof e);
  ::_exit(127);
}

}  // namespace

SpawnedChild spawn_child(const ChildOptions& options) {
  // Everything the child needs is prepared before fork.
  auto env_store = child_environment(options);
  auto envp = pointers(env_store);
  auto args = options.argv;
  auto argv = pointers(args);

  int out[2] = {-1, -1}, err[2] = {-1, -1}, exec_err[2] = {-1, -1};
  const auto close_all = [&] {
    for (int fd : {out[0], out[1], err[0], err[1], exec_err[0], exec_err[1]}) {
      if (fd >= 0) {
        ::close(fd);
      }
    }
  };
  const auto failed = [&](const char* step, int error) {
    close_all();
    return SpawnedChild{.error = error, .step = step};
  };
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0 ||
      ::pipe2(exec_err, O_CLOEXEC) != 0) {
    return failed("pipe", errno);
  }
  const pid_t parent = ::getpid();
  const long max_fd = ::sysconf(_SC_OPEN_MAX);
  const pid_t pid = ::fork();
  if (pid < 0) {
    return failed("fork", errno);
  }
  if (pid == 0) {
    become(options, parent, max_fd, argv.data(), envp.data(), out, err, exec_err[1]);
  }
  // Also here, so that a stop right after the start finds the group (no race with the child).
  ::setpgid(pid, pid);
  ::close(std::exchange(out[1], -1));
  ::close(std::exchange(err[1], -1));
  ::close(std::exchange(exec_err[1], -1));
  int exec_errno = 0;
  auto n = ::read(exec_err[0], &exec_errno, sizeof exec_errno);
  while (n < 0 && errno == EINTR) {
    n = ::read(exec_err[0], &exec_errno, sizeof exec_errno);
  }
  if (n == sizeof exec_errno) {
    ::waitpid(pid, nullptr, 0);
    return failed("exec", exec_errno);
  }
  ::close(exec_err[0]);
  return SpawnedChild{.pid = pid, .out = out[0], .err = err[0]};
}

int open_pidfd(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

}  // namespace va
