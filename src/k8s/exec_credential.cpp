#include "k8s/exec_credential.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#include "core/child_process.hpp"
#include "core/duration.hpp"
#include "core/exit_status.hpp"
#include "core/log.hpp"
#include "core/spawn.hpp"

namespace va::k8s {
namespace {

namespace json = boost::json;
using SystemClock = std::chrono::system_clock;
using namespace net::experimental::awaitable_operators;

constexpr std::size_t kMaxStdout = 1024 * 1024;
constexpr std::size_t kMaxStderrLine = 512;

std::string who(const ExecConfig& e) { return "exec credential plugin \"" + e.command + "\""; }

// The plugin's process. Killed with its process group and reaped when the run ends without
// having reaped it (an exception, the io_context destroyed mid-run).
struct Child {
  pid_t pid = -1;
  bool reaped = false;
  std::optional<int> status;  // nullopt: reaped by someone else, status unknown
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid > 0 && !reaped) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

outcome<SpawnedChild> spawn_plugin(const ExecConfig& e, const std::string& info) {
  ChildOptions options{.argv = {e.command}, .env = {}, .stop_with_parent = false};
  options.argv.insert(options.argv.end(), e.args.begin(), e.args.end());
  options.env.assign(e.env.begin(), e.env.end());
  options.env.emplace_back("KUBERNETES_EXEC_INFO", info);
  SpawnedChild child = spawn_child(options);
  if (child.pid < 0 && child.error == ENOENT && std::string_view(child.step) == "exec") {
    std::string msg = who(e) + ": not found";
    msg += e.command.find('/') == std::string::npos ? " in PATH" : "";
    if (!e.install_hint.empty()) {
      msg += "; " + e.install_hint;
    }
    return Failure{errc::scaler_error, std::move(msg)};
  }
  if (child.pid < 0) {
    const std::string step = std::string_view(child.step) == "exec" ? "cannot run" : child.step;
    return Failure{errc::scaler_error, who(e) + ": " + step + ": " + std::strerror(child.error)};
  }
  return child;
}

task<void> read_stdout(net::posix::stream_descriptor& fd, std::string& out, bool& too_long) {
  std::array<char, 16 * 1024> buf;
  for (;;) {
    auto [ec, n] = co_await fd.async_read_some(net::buffer(buf), use_nothrow);
    if (out.size() + n > kMaxStdout) {
      too_long = true;  // read on, so that the plugin does not block on a full pipe
    } else {
      out.append(buf.data(), n);
    }
    if (ec) {
      co_return;
    }
  }
}

// Logs each stderr line (as kubectl shows the plugin's stderr) and keeps the last one.
task<void> read_stderr(net::posix::stream_descriptor& fd, const std::string& command,
                       std::string& last) {
  std::array<char, 4096> buf;
  std::string pending;
  const auto emit = [&](std::string_view line) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
      line.remove_suffix(1);
    }
    if (line.empty()) {
      return;
    }
    last = std::string(line.substr(0, kMaxStderrLine));
    log::info("exec credential plugin stderr", {{"command", command}, {"line", last}});
  };
  for (;;) {
    auto [ec, n] = co_await fd.async_read_some(net::buffer(buf), use_nothrow);
    pending.append(buf.data(), n);
    for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
      emit(std::string_view(pending).substr(0, nl));
      pending.erase(0, nl + 1);
    }
    if (ec || pending.size() > 8 * kMaxStderrLine) {
      emit(pending);
      pending.clear();
    }
    if (ec) {
      co_return;
    }
  }
}

void reap(Child& child, int options) {
  int status = 0;
  const pid_t r = ::waitpid(child.pid, &status, options);
  if (r == child.pid) {
    child.reaped = true;
    child.status = status;
  } else if (r < 0 && errno == ECHILD) {
    child.reaped = true;  // someone else reaped it; the pid may already be reused
  }
}

// Until the child has exited and is reaped, or cancellation.
task<void> wait_exit(Child& child, net::posix::stream_descriptor* pidfd) {
  if (pidfd != nullptr) {
    auto [ec] = co_await pidfd->async_wait(net::posix::stream_descriptor::wait_read, use_nothrow);
    if (!ec) {
      reap(child, 0);  // it has exited: this does not block
    }
    co_return;
  }
  // Kernels before 5.3 have no pidfd: poll.
  Timer t(co_await net::this_coro::executor);
  for (;;) {
    reap(child, WNOHANG);
    if (child.reaped) {
      co_return;
    }
    t.expires_after(5ms);
    auto [ec] = co_await t.async_wait(use_nothrow);
    if (ec) {
      co_return;
    }
  }
}

const json::string* string_at(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v ? v->if_string() : nullptr;
}

bool non_empty_string_at(const json::object& o, std::string_view key) {
  const auto* s = string_at(o, key);
  return s != nullptr && !s->empty();
}

// Digits at s[pos, pos + n) as a number; -1 if they are not all digits.
int digits(std::string_view s, std::size_t pos, std::size_t n) {
  if (pos + n > s.size()) {
    return -1;
  }
  int v = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') {
      return -1;
    }
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

}  // namespace

std::optional<SystemClock::time_point> parse_rfc3339(std::string_view s) {
  using namespace std::chrono;
  // 2006-01-02T15:04:05[.999999999](Z|±07:00)
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
      s[13] != ':' || s[16] != ':') {
    return std::nullopt;
  }
  const int y = digits(s, 0, 4), mo = digits(s, 5, 2), d = digits(s, 8, 2);
  const int h = digits(s, 11, 2), mi = digits(s, 14, 2), sec = digits(s, 17, 2);
  if (y < 0 || mo < 0 || d < 0 || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 59) {
    return std::nullopt;
  }
  const year_month_day date{year(y), month(static_cast<unsigned>(mo)),
                            day(static_cast<unsigned>(d))};
  if (!date.ok()) {
    return std::nullopt;
  }
  std::size_t i = 19;
  nanoseconds frac{0};
  if (i < s.size() && s[i] == '.') {
    ++i;
    const std::size_t start = i;
    long long scale = 100'000'000;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      frac += nanoseconds((s[i] - '0') * scale);
      scale /= 10;
      ++i;
    }
    if (i == start) {
      return std::nullopt;
    }
  }
  minutes offset{0};
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    const int oh = digits(s, i + 1, 2), om = digits(s, i + 4, 2);
    if (oh < 0 || oh > 23 || om < 0 || om > 59 || i + 3 >= s.size() || s[i + 3] != ':') {
      return std::nullopt;
    }
    offset = hours(oh) + minutes(om);
    if (s[i] == '-') {
      offset = -offset;
    }
    i += 6;
  } else {
    return std::nullopt;
  }
  if (i != s.size()) {
    return std::nullopt;
  }
  // In seconds first: any year from 0000 to 9999 fits, where system_clock's nanoseconds end in
  // 1677 and 2262 (fuzz_k8s: year 0026 overflowed). A time outside 1900–2200 is clamped to it:
  // long past or far off, which is all an expiry says (Go's zero time, 0001-01-01, is "expired").
  const sys_seconds at = sys_days(date) + hours(h) + minutes(mi) + seconds(sec) - offset;
  constexpr sys_seconds kFirst = sys_days(year(1900) / 1 / 1);
  constexpr sys_seconds kLast = sys_days(year(2200) / 1 / 1);
  if (at < kFirst) {
    return time_point_cast<SystemClock::duration>(kFirst);
  }
  if (at >= kLast) {
    return time_point_cast<SystemClock::duration>(kLast);
  }
  return time_point_cast<SystemClock::duration>(at) + duration_cast<SystemClock::duration>(frac);
}

std::string exec_info(const ExecConfig& exec, const ClusterConfig& cluster) {
  json::object spec;
  spec["interactive"] = false;
  if (exec.provide_cluster_info) {
    json::object c;
    c["server"] = cluster.server;
    // server_name defaults to the host: only a configured tls-server-name differs.
    if (!cluster.server_name.empty() && cluster.server_name != cluster.host) {
      c["tls-server-name"] = cluster.server_name;
    }
    if (cluster.insecure_skip_tls_verify) {
      c["insecure-skip-tls-verify"] = true;
    }
    if (!cluster.ca_pem.empty()) {
      c["certificate-authority-data"] = base64_encode(cluster.ca_pem);
    }
    spec["cluster"] = std::move(c);
  }
  json::object info;
  info["apiVersion"] = exec.api_version;
  info["kind"] = "ExecCredential";
  info["spec"] = std::move(spec);
  return json::serialize(info);
}

outcome<ExecCredential> parse_exec_credential(std::string_view text, std::string_view api_version,
                                              std::string_view who) {
  const auto bad = [&](const std::string& what) {
    return Failure{errc::scaler_error, std::string(who) + ": " + what};
  };
  error_code ec;
  const auto v = json::parse(text, ec);
  if (ec) {
    return bad("its output is not JSON (" + ec.message() + ")");
  }
  const auto* root = v.if_object();
  if (root == nullptr) {
    return bad("its output is not a JSON object");
  }
  // An error quotes what the plugin said in kind, apiVersion and expirationTimestamp; never a value
  // that carries the token (as it is, or as JSON writes it), wherever the plugin put it.
  std::string token_text;
  std::string token_json;
  if (const auto* s = root->if_contains("status"); s != nullptr && s->is_object()) {
    if (const auto* t = string_at(s->get_object(), "token"); t != nullptr && !t->empty()) {
      token_text = *t;
      token_json = json::serialize(*t);
      token_json = token_json.substr(1, token_json.size() - 2);
    }
  }
  const auto quoted = [&](std::string said) {
    if (!token_text.empty() && (said.find(token_text) != std::string::npos ||
                                said.find(token_json) != std::string::npos)) {
      return std::string("(not quoted: it holds the token)");
    }
    return said;
  };
  const auto* kind = string_at(*root, "kind");
  if (kind == nullptr || *kind != "ExecCredential") {
    return bad("its output is not an ExecCredential (kind " +
               quoted("\"" + (kind ? std::string(*kind) : std::string()) + "\"") + ")");
  }
  const auto* version = string_at(*root, "apiVersion");
  if (version == nullptr || *version != api_version) {
    return bad("it answered with apiVersion " +
               quoted("\"" + (version ? std::string(*version) : std::string()) + "\"") +
               ", but the kubeconfig asks for \"" + std::string(api_version) + "\"");
  }
  const auto* status_value = root->if_contains("status");
  if (status_value == nullptr || !status_value->is_object()) {
    return bad("its ExecCredential has no status");
  }
  const auto& status = status_value->get_object();
  ExecCredential c;
  if (const auto* token = status.if_contains("token"); token && !token->is_null()) {
    if (!token->is_string()) {
      return bad("its status.token is not a string");
    }
    c.token = std::string(token->get_string());
  }
  if (c.token.empty()) {
    if (non_empty_string_at(status, "clientCertificateData") ||
        non_empty_string_at(status, "clientKeyData")) {
      return bad(
          "it returned a client certificate (status.clientCertificateData/clientKeyData) "
          "instead of a token: not supported (the proxy's TLS client certificate is fixed at "
          "startup); configure the plugin to return a token, or use client-certificate-data");
    }
    return bad("its ExecCredential has no status.token");
  }
  if (const auto* exp = status.if_contains("expirationTimestamp"); exp && !exp->is_null()) {
    const auto* s = exp->if_string();
    c.expires = s ? parse_rfc3339(*s) : std::nullopt;
    if (!c.expires) {
      return bad("its status.expirationTimestamp " + quoted(json::serialize(*exp)) +
                 " is not an RFC 3339 time");
    }
  }
  return c;
}

task<outcome<ExecCredential>> run_exec_plugin(ExecConfig exec, std::string info,
                                              std::chrono::milliseconds timeout) {
  const std::string name = who(exec);
  auto spawned = spawn_plugin(exec, info);
  if (!spawned) {
    co_return spawned.error();
  }
  const auto ex = co_await net::this_coro::executor;
  // Declared first, destroyed last: the pipes are closed before an unfinished child is killed.
  Child child;
  child.pid = spawned->pid;
  net::posix::stream_descriptor out(ex, spawned->out);
  net::posix::stream_descriptor err(ex, spawned->err);
  std::optional<net::posix::stream_descriptor> pidfd;
  if (const int fd = open_pidfd(child.pid); fd >= 0) {
    pidfd.emplace(ex, fd);
  }
  net::posix::stream_descriptor* const pidfd_ptr = pidfd ? &*pidfd : nullptr;

  std::string output;
  std::string last_stderr;
  bool too_long = false;
  Timer deadline(ex, timeout);
  auto finished = read_stdout(out, output, too_long) &&
                  read_stderr(err, exec.command, last_stderr) && wait_exit(child, pidfd_ptr);
  const auto done = co_await (std::move(finished) || deadline.async_wait(use_nothrow_task));
  const std::string stderr_suffix = last_stderr.empty() ? "" : ": " + last_stderr;
  if (done.index() == 1) {
    // Its group too: what it started may hold the pipes open after it has exited.
    ::kill(-child.pid, SIGKILL);
    if (!child.reaped) {
      ::kill(child.pid, SIGKILL);
      co_await wait_exit(child, pidfd_ptr);  // prompt after SIGKILL
    }
    co_return Failure{
        errc::scaler_unavailable,
        name + ": no answer within " + format_duration(timeout) + ", killed" + stderr_suffix};
  }
  if (child.status && *child.status != 0) {
    co_return Failure{errc::scaler_unavailable,
                      name + ": " + describe_exit_status(*child.status) + stderr_suffix};
  }
  if (too_long) {
    co_return Failure{errc::scaler_error,
                      name + ": printed more than " + std::to_string(kMaxStdout) + " bytes"};
  }
  auto credential = parse_exec_credential(output, exec.api_version, name);
  if (!credential && !last_stderr.empty()) {
    auto f = credential.error();
    f.message += " (its last stderr line: " + last_stderr + ")";
    co_return f;
  }
  co_return credential;
}

using Waiter = net::experimental::concurrent_channel<void(error_code, outcome<std::string>)>;

struct ExecTokenSource::State {
  State(Settings s, Executor e) : settings(std::move(s)), ex(std::move(e)) {}
  Settings settings;
  Executor ex;
  std::mutex mu;
  // Guarded by mu:
  std::optional<ExecCredential> cached;
  bool running = false;
  std::vector<std::shared_ptr<Waiter>> waiters;

  bool fresh(SystemClock::time_point now) const {
    return cached && (!cached->expires || now + settings.expiry_margin < *cached->expires);
  }
};

ExecTokenSource::ExecTokenSource(Settings settings, Executor ex)
    : state_(std::make_shared<State>(std::move(settings), std::move(ex))) {}

ExecTokenSource::~ExecTokenSource() = default;

task<outcome<std::string>> ExecTokenSource::token() {
  const auto ex = co_await net::this_coro::executor;
  std::shared_ptr<Waiter> waiter;
  std::string token;
  bool start = false;
  {
    std::lock_guard lock(state_->mu);
    if (state_->fresh(SystemClock::now())) {
      token = state_->cached->token;
    } else {
      waiter = std::make_shared<Waiter>(ex, 1);
      state_->waiters.push_back(waiter);
      start = !std::exchange(state_->running, true);
    }
  }
  if (!waiter) {
    co_return token;
  }
  if (start) {
    // Not under the lock: co_spawn may run the coroutine's start right here.
    spawn(state_->ex, run(state_), "exec credential plugin");
  }
  auto [ec, got] = co_await waiter->async_receive(use_nothrow);
  if (ec) {
    co_return Failure{errc::scaler_error, state_->settings.source + ": " +
                                              who(state_->settings.exec) +
                                              ": cancelled while waiting for it"};
  }
  co_return std::move(got);
}

void ExecTokenSource::invalidate(const std::string& token) {
  std::lock_guard lock(state_->mu);
  if (state_->cached && state_->cached->token == token) {
    state_->cached.reset();
  }
}

task<void> ExecTokenSource::run(std::shared_ptr<State> s) {
  const auto& settings = s->settings;
  outcome<ExecCredential> got = Failure{errc::scaler_error, who(settings.exec) + ": not run"};
  log::debug("running exec credential plugin", {{"command", settings.exec.command}});
  try {
    got = co_await run_exec_plugin(settings.exec, settings.exec_info, settings.timeout);
  } catch (const std::exception& e) {
    got = Failure{errc::scaler_error, who(settings.exec) + ": " + e.what()};
  }
  outcome<std::string> result = std::string();
  if (got) {
    result = got->token;
    std::string expires = "none (until the API server refuses it)";
    if (got->expires) {
      const auto left =
          std::chrono::duration_cast<std::chrono::seconds>(*got->expires - SystemClock::now());
      expires = left.count() > 0 ? "in " + std::to_string(left.count()) + "s" : "already expired";
    }
    log::info("exec credential plugin gave a token",
              {{"command", settings.exec.command}, {"expires", expires}});
  } else {
    auto f = got.error();
    f.message = settings.source + ": " + f.message;
    log::warn("exec credential plugin failed", {{"error", f.message}});
    result = std::move(f);
  }
  std::vector<std::shared_ptr<Waiter>> waiters;
  {
    std::lock_guard lock(s->mu);
    if (got) {
      s->cached = std::move(*got);
    }
    s->running = false;
    waiters.swap(s->waiters);
  }
  for (const auto& w : waiters) {
    w->try_send(error_code{}, result);  // a cancelled waiter's value stays in its buffer
  }
}

}  // namespace va::k8s
