#include "core/log.hpp"

#include <fmt/chrono.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <atomic>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <cstdlib>
#include <ctime>

namespace va::log {
namespace {
std::atomic<Format> g_format{Format::json};

std::string timestamp() {
  const auto now = std::chrono::system_clock::now();
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03d}Z", tm, static_cast<int>(ms.count()));
}
}  // namespace

void init(Level level, Format format) {
  auto logger = spdlog::stdout_logger_mt("va");
  logger->set_pattern("%v");
  logger->set_level(level);
  logger->flush_on(Level::trace);
  spdlog::set_default_logger(std::move(logger));
  g_format = format;
}

bool enabled(Level level) { return spdlog::default_logger_raw()->should_log(level); }

void write(Level level, std::string_view msg, Fields fields) {
  if (!enabled(level)) {
    return;
  }
  const auto lvl = spdlog::level::to_string_view(level);
  std::string line;
  if (g_format == Format::json) {
    boost::json::object o;
    o["ts"] = timestamp();
    o["level"] = std::string_view(lvl.data(), lvl.size());
    o["msg"] = boost::json::string_view(msg.data(), msg.size());
    for (const auto& f : fields) {
      o[boost::json::string_view(f.key.data(), f.key.size())] = f.value;
    }
    line = boost::json::serialize(o);
  } else {
    line = fmt::format("{} {} {}", timestamp(), std::string_view(lvl.data(), lvl.size()), msg);
    for (const auto& f : fields) {
      const auto& v = f.value;
      line += fmt::format(" {}={}", f.key,
                          v.is_string() ? std::string(v.get_string()) : boost::json::serialize(v));
    }
  }
  spdlog::default_logger_raw()->log(level, "{}", line);
}

}  // namespace va::log
