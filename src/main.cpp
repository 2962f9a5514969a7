// vllm-autoscaler: flags → config → App → run; nothing else.
#include <iostream>

#include "app/app.hpp"
#include "config/loader.hpp"

extern char** environ;

int main(int argc, char** argv) {
  using namespace va;
  try {
    auto loaded = config::load(argc, argv, config::environment_map(environ));
    switch (loaded.action) {
      case config::Action::version:
        std::cout << "vllm-autoscaler " << VA_VERSION << "\n";
        return 0;
      case config::Action::help:
        std::cout << loaded.help_text;
        return 0;
      case config::Action::check_config:
        std::cout << "configuration is valid\n";
        return 0;
      case config::Action::print_config:
        std::cout << config::to_yaml(loaded.config);
        return 0;
      case config::Action::run:
        break;
    }
    app::App app(std::move(loaded.config));
    return app.run();
  } catch (const ConfigError& e) {
    std::cerr << "vllm-autoscaler: invalid configuration:\n";
    for (const auto& p : e.problems()) {
      std::cerr << "  " << p << "\n";
    }
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "vllm-autoscaler: " << e.what() << "\n";
    return 1;
  }
}
