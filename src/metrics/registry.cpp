#include "metrics/registry.hpp"

#include <fmt/format.h>

#include <cmath>

namespace va::metrics {
namespace {
std::string escape_label(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}
}  // namespace

std::string format_value(double v) {
  if (std::isnan(v)) {
    return "NaN";
  }
  if (std::isinf(v)) {
    return v > 0 ? "+Inf" : "-Inf";
  }
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    return fmt::format("{}", static_cast<long long>(v));
  }
  return fmt::format("{}", v);
}

Histogram::Histogram(const std::vector<double>& bounds)
    : bounds_(bounds), counts_(new std::atomic<std::uint64_t>[bounds.size() + 1]) {
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    counts_[i] = 0;
  }
}

void Histogram::observe(double v) {
  std::size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) {
    ++i;
  }
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

void Histogram::render(std::string& out, std::string_view name, std::string_view labels) const {
  const std::string sep = labels.empty() ? "" : ",";
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i].load(std::memory_order_relaxed);
    const std::string le = i < bounds_.size() ? format_value(bounds_[i]) : "+Inf";
    fmt::format_to(std::back_inserter(out), "{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, sep,
                   le, cumulative);
  }
  const std::string braces = labels.empty() ? "" : fmt::format("{{{}}}", labels);
  fmt::format_to(std::back_inserter(out), "{}_sum{} {}\n{}_count{} {}\n", name, braces,
                 format_value(sum_.load()), name, braces, cumulative);
}

std::string FamilyBase::label_text(const std::vector<std::string>& values) const {
  std::string out;
  for (std::size_t i = 0; i < labels_.size() && i < values.size(); ++i) {
    if (i > 0) {
      out += ',';
    }
    out += fmt::format("{}=\"{}\"", labels_[i], escape_label(values[i]));
  }
  return out;
}

void FamilyBase::render(std::string& out) const {
  static constexpr const char* kTypes[] = {"counter", "gauge", "histogram"};
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name_, help_, name_,
                 kTypes[static_cast<int>(type_)]);
  std::lock_guard lock(mu_);
  render_children(out);
}

template <class M>
void Family<M>::render_children(std::string& out) const {
  for (const auto& [values, child] : children_) {
    const std::string labels = label_text(values);
    if constexpr (std::is_same_v<M, Histogram>) {
      child->render(out, name_, labels);
    } else {
      fmt::format_to(std::back_inserter(out), "{}{}{}{} {}\n", name_, labels.empty() ? "" : "{",
                     labels, labels.empty() ? "" : "}", format_value(child->value()));
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

template <class M>
Family<M>& Registry::add(std::string name, std::string help, Type type,
                         std::vector<std::string> labels) {
  auto f = std::make_unique<Family<M>>(std::move(name), std::move(help), type, std::move(labels));
  auto& ref = *f;
  families_.push_back(std::move(f));
  return ref;
}

Family<Counter>& Registry::counter(std::string name, std::string help,
                                   std::vector<std::string> labels) {
  return add<Counter>(std::move(name), std::move(help), Type::counter, std::move(labels));
}

Family<Gauge>& Registry::gauge(std::string name, std::string help,
                               std::vector<std::string> labels) {
  return add<Gauge>(std::move(name), std::move(help), Type::gauge, std::move(labels));
}

Family<Histogram>& Registry::histogram(std::string name, std::string help,
                                       std::vector<std::string> labels,
                                       std::vector<double> bounds) {
  auto& f = add<Histogram>(std::move(name), std::move(help), Type::histogram, std::move(labels));
  f.bounds = std::move(bounds);
  return f;
}

std::uint64_t SampledGauge::add(Source source) {
  std::lock_guard lock(mu_);
  sources_.emplace_back(next_, std::move(source));
  return next_++;
}

void SampledGauge::remove(std::uint64_t id) {
  std::lock_guard lock(mu_);
  std::erase_if(sources_, [id](const auto& s) { return s.first == id; });
}

void SampledGauge::render_children(std::string& out) const {
  Samples samples;
  for (const auto& [id, source] : sources_) {
    source(samples);
  }
  for (const auto& [values, value] : samples) {
    fmt::format_to(std::back_inserter(out), "{}{{{}}} {}\n", name_, label_text(values),
                   format_value(value));
  }
}

SampledGauge& Registry::sampled_gauge(std::string name, std::string help,
                                      std::vector<std::string> labels) {
  auto f = std::make_unique<SampledGauge>(std::move(name), std::move(help), Type::gauge,
                                          std::move(labels));
  auto& ref = *f;
  families_.push_back(std::move(f));
  return ref;
}

std::string Registry::render() const {
  std::string out;
  for (const auto& f : families_) {
    f->render(out);
  }
  return out;
}

}  // namespace va::metrics
