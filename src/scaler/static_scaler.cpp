#include "scaler/static_scaler.hpp"

#include "scaler/process_scaler.hpp"

namespace va::scaler {

task<outcome<void>> StaticScaler::scale_to(int) { co_return outcome<void>{}; }

task<outcome<Observed>> StaticScaler::observe() {
  co_return Observed{.desired = 1, .ready = 1, .fatal = false, .reason = ""};
}

std::unique_ptr<Scaler> make_scaler(const config::Backend& backend, net::any_io_executor ex) {
  if (backend.scaler.type == "process") {
    return std::make_unique<ProcessScaler>(
        ProcessScaler::Settings{.backend = backend.name,
                                .command = backend.scaler.command,
                                .env = backend.scaler.env,
                                .stop_timeout = backend.scaler.stop_timeout},
        std::move(ex));
  }
  if (backend.scaler.type == "static") {
    return std::make_unique<StaticScaler>();
  }
  throw config::ConfigError({"backends." + backend.name + ".scaler.type: \"" + backend.scaler.type +
                             "\" is not available in this build"});
}

}  // namespace va::scaler
