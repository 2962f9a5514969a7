#include "sim/gpu.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>

namespace va::sim {

namespace {

// The budget file, open and locked with flock(2) for as long as this object lives.
class LockedFile {
 public:
  explicit LockedFile(const std::string& path)
      : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_ >= 0 && ::flock(fd_, LOCK_EX) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~LockedFile() {
    if (fd_ >= 0) {
      ::close(fd_);  // releases the lock
    }
  }
  LockedFile(const LockedFile&) = delete;
  LockedFile& operator=(const LockedFile&) = delete;

  bool ok() const { return fd_ >= 0; }

  std::string read_all() const {
    std::string text;
    char buf[4096];
    for (off_t at = 0;;) {
      const auto n = ::pread(fd_, buf, sizeof buf, at);
      if (n <= 0) {
        return text;
      }
      text.append(buf, static_cast<std::size_t>(n));
      at += n;
    }
  }

  bool write_all(const std::string& text) const {
    if (::ftruncate(fd_, 0) != 0) {
      return false;
    }
    for (std::size_t at = 0; at < text.size();) {
      const auto n = ::pwrite(fd_, text.data() + at, text.size() - at, static_cast<off_t>(at));
      if (n <= 0) {
        return false;
      }
      at += static_cast<std::size_t>(n);
    }
    return true;
  }

 private:
  int fd_;
};

bool pid_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

// The live sims' uses, by PID.
std::map<pid_t, double> live_uses(const std::string& text) {
  std::map<pid_t, double> uses;
  std::istringstream in(text);
  pid_t pid = 0;
  double gib = 0;
  while (in >> pid >> gib) {
    if (pid > 0 && pid_alive(pid)) {
      uses[pid] = gib;
    }
  }
  return uses;
}

std::string render(const std::map<pid_t, double>& uses) {
  std::ostringstream out;
  for (const auto& [pid, gib] : uses) {
    out << pid << ' ' << gib << '\n';
  }
  return out.str();
}

std::string gib_text(double gib) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", gib);
  return buf;
}

}  // namespace

std::optional<std::string> GpuBudget::claim(double gib) {
  if (settings_.name.empty()) {
    used_ = gib;
    return std::nullopt;
  }
  std::error_code ec;
  std::filesystem::create_directories(settings_.dir, ec);
  const auto path = settings_.dir + "/" + settings_.name;
  LockedFile file(path);
  if (!file.ok()) {
    return "cannot lock the GPU budget file " + path + ": " + std::strerror(errno);
  }
  auto uses = live_uses(file.read_all());
  const pid_t self = ::getpid();
  double others = 0;
  for (const auto& [pid, use] : uses) {
    others += pid == self ? 0 : use;
  }
  const double free_gib = std::max(0.0, settings_.total_gib - others - used_);
  if (gib > used_ && others + gib > settings_.total_gib + 1e-9) {
    return "CUDA out of memory. Tried to allocate " + gib_text(gib - used_) + ". GPU 0 (" +
           settings_.name + ") has a total capacity of " + gib_text(settings_.total_gib) +
           " of which " + gib_text(free_gib) + " is free. Of the allocated memory " +
           gib_text(others) + " is held by other processes.";
  }
  uses[self] = gib;
  if (gib <= 0) {
    uses.erase(self);
  }
  if (!file.write_all(render(uses))) {
    return "cannot write the GPU budget file " + path + ": " + std::strerror(errno);
  }
  used_ = gib;
  return std::nullopt;
}

void GpuBudget::release() {
  if (used_ > 0) {
    (void)claim(0);
  }
}

}  // namespace va::sim
