#include "scaler/process_scaler.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "config/loader.hpp"
#include "core/exit_status.hpp"
#include "core/log.hpp"
#include "core/spawn.hpp"

extern char** environ;

namespace va::scaler {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) {
    out += out.empty() ? "" : " ";
    out += s;
  }
  return out;
}

}  // namespace

ProcessScaler::ProcessScaler(Settings settings, Executor ex)
    : settings_(std::move(settings)), ex_(ex), exited_(ex) {}

ProcessScaler::~ProcessScaler() {
  if (pid_ > 0) {
    ::kill(-pid_, SIGKILL);
  }
}

task<outcome<void>> ProcessScaler::scale_to(int replicas, std::string) {
  desired_ = replicas > 0 ? 1 : 0;
  if (desired_ == 1 && pid_ < 0) {
    co_return start();
  }
  if (desired_ == 0 && pid_ > 0) {
    co_await stop();
  }
  co_return outcome<void>{};
}

task<outcome<Observed>> ProcessScaler::observe() {
  Observed o{.desired = desired_, .ready = pid_ > 0 ? 1 : 0, .fatal = false, .reason = ""};
  if (pid_ < 0 && desired_ == 1 && !exit_reason_.empty()) {
    o.fatal = true;
    o.reason = exit_reason_;
  }
  co_return o;
}

task<void> ProcessScaler::shutdown() {
  desired_ = 0;
  co_await stop();
}

outcome<void> ProcessScaler::start() {
  // Everything the child needs is prepared before fork: between fork and exec only
  // async-signal-safe calls are allowed.
  std::vector<std::string> env_store;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    const auto key = kv.substr(0, kv.find('='));
    if (!settings_.env.contains(std::string(key))) {
      env_store.emplace_back(kv);
    }
  }
  for (const auto& [k, v] : settings_.env) {
    env_store.push_back(k + "=" + v);
  }
  std::vector<char*> envp;
  for (auto& s : env_store) {
    envp.push_back(s.data());
  }
  envp.push_back(nullptr);
  std::vector<std::string> args = settings_.command;
  std::vector<char*> argv;
  for (auto& s : args) {
    argv.push_back(s.data());
  }
  argv.push_back(nullptr);

  int out[2] = {-1, -1}, err[2] = {-1, -1}, exec_err[2] = {-1, -1};
  auto close_all = [&] {
    for (int fd : {out[0], out[1], err[0], err[1], exec_err[0], exec_err[1]}) {
      if (fd >= 0) {
        ::close(fd);
      }
    }
  };
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0 ||
      ::pipe2(exec_err, O_CLOEXEC) != 0) {
    const std::string why = std::strerror(errno);
    close_all();
    return fail(errc::scaler_error, "pipe: " + why);
  }
  const pid_t parent = ::getpid();
  const long max_fd = ::sysconf(_SC_OPEN_MAX);
  const pid_t pid = ::fork();
  if (pid < 0) {
    const std::string why = std::strerror(errno);
    close_all();
    return fail(errc::scaler_error, "fork: " + why);
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    // If the proxy dies without stopping us, the backend must not run on (and hold a GPU).
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) {
      ::_exit(127);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGINT, SIG_DFL);
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    // None of the proxy's descriptors may live on in the backend: a listening socket held open
    // by the child keeps accepting connections after the proxy has closed it (on SIGTERM).
    if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
      for (long fd = 3; fd < max_fd; ++fd) {
        ::fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
      }
    }
    ::execvpe(argv[0], argv.data(), envp.data());
    const int e = errno;
    [[maybe_unused]] auto n = ::write(exec_err[1], &e, sizeof e);
    ::_exit(127);
  }
  // Also here, so that a stop right after the start finds the group (no race with the child).
  ::setpgid(pid, pid);
  ::close(out[1]);
  ::close(err[1]);
  ::close(exec_err[1]);
  int exec_errno = 0;
  const auto n = ::read(exec_err[0], &exec_errno, sizeof exec_errno);
  ::close(exec_err[0]);
  if (n == sizeof exec_errno) {
    ::waitpid(pid, nullptr, 0);
    ::close(out[0]);
    ::close(err[0]);
    exit_reason_ = "cannot run " + settings_.command.front() + ": " + std::strerror(exec_errno);
    return fail(errc::backend_failed, exit_reason_);
  }
  pid_ = pid;
  exit_reason_.clear();
  last_stderr_.clear();
  log::info("backend process started",
            {{"backend", settings_.backend},
             {"pid", static_cast<int>(pid)},
             {"command", join(config::mask_command_secrets(settings_.command))}});
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  spawn(ex_, read_output(out[0], "stdout"), "process stdout");
  spawn(ex_, read_output(err[0], "stderr"), "process stderr");
  spawn(ex_, wait_exit(pid, pidfd), "process wait");
  return outcome<void>{};
}

task<void> ProcessScaler::wait_exit(pid_t pid, int pidfd) {
  int status = 0;
  if (pidfd >= 0) {
    net::posix::stream_descriptor fd(ex_, pidfd);
    co_await fd.async_wait(net::posix::stream_descriptor::wait_read, use_nothrow);
    ::waitpid(pid, &status, 0);
  } else {
    // Kernels before 5.3 have no pidfd: poll.
    Timer t(ex_);
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      t.expires_after(50ms);
      co_await t.async_wait(use_nothrow);
    }
  }
  on_exit(pid, status);
}

void ProcessScaler::on_exit(pid_t pid, int status) {
  if (pid != pid_) {
    return;
  }
  pid_ = -1;
  std::string reason = "process " + describe_exit_status(status);
  if (!last_stderr_.empty()) {
    reason += ": " + last_stderr_;
  }
  log::info("backend process exited",
            {{"backend", settings_.backend}, {"pid", static_cast<int>(pid)}, {"reason", reason}});
  if (desired_ == 1) {
    exit_reason_ = reason;
  }
  exited_.cancel();
  changed();
}

task<void> ProcessScaler::read_output(int raw_fd, std::string stream_name) {
  net::posix::stream_descriptor fd(ex_, raw_fd);
  std::string buf;
  for (;;) {
    auto [ec, n] = co_await net::async_read_until(fd, net::dynamic_buffer(buf), '\n', use_nothrow);
    if (ec && buf.empty()) {
      co_return;
    }
    std::string line = ec ? buf : buf.substr(0, n - 1);
    buf.erase(0, ec ? buf.size() : n);
    if (!line.empty() && line.back() == '\r') {
      line.pop_back();
    }
    if (stream_name == "stderr" && !line.empty()) {
      last_stderr_ = line.substr(0, 512);
    }
    log::info("backend output",
              {{"backend", settings_.backend}, {"stream", stream_name}, {"line", line}});
  }
}

task<void> ProcessScaler::stop() {
  const pid_t pid = pid_;
  if (pid < 0) {
    co_return;
  }
  log::info("stopping backend process",
            {{"backend", settings_.backend}, {"pid", static_cast<int>(pid)}});
  ::kill(-pid, SIGTERM);
  exited_.expires_after(settings_.stop_timeout);
  if (pid_ == pid) {
    co_await exited_.async_wait(use_nothrow);
  }
  if (pid_ == pid) {
    log::warn("backend process ignored SIGTERM; killing",
              {{"backend", settings_.backend}, {"pid", static_cast<int>(pid)}});
    ::kill(-pid, SIGKILL);
    exited_.expires_after(5s);
    co_await exited_.async_wait(use_nothrow);
  }
}

}  // namespace va::scaler
