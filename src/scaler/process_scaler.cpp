#include "scaler/process_scaler.hpp"

#include <signal.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>

#include "config/loader.hpp"
#include "core/child_process.hpp"
#include "core/exit_status.hpp"
#include "core/log.hpp"
#include "core/spawn.hpp"

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
  ChildOptions options{.argv = settings_.command, .env = {}, .stop_with_parent = true};
  options.env.assign(settings_.env.begin(), settings_.env.end());
  const SpawnedChild child = spawn_child(options);
  if (child.pid < 0 && std::string_view(child.step) == "exec") {
    exit_reason_ = "cannot run " + settings_.command.front() + ": " + std::strerror(child.error);
    return fail(errc::backend_failed, exit_reason_);
  }
  if (child.pid < 0) {
    return fail(errc::scaler_error, std::string(child.step) + ": " + std::strerror(child.error));
  }
  const pid_t pid = child.pid;
  pid_ = pid;
  exit_reason_.clear();
  last_stderr_.clear();
  log::info("backend process started",
            {{"backend", settings_.backend},
             {"pid", static_cast<int>(pid)},
             {"command", join(config::mask_command_secrets(settings_.command))}});
  spawn(ex_, read_output(child.out, "stdout"), "process stdout");
  spawn(ex_, read_output(child.err, "stderr"), "process stderr");
  spawn(ex_, wait_exit(pid, open_pidfd(pid)), "process wait");
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
