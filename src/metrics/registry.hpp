#pragma once
// A small Prometheus registry: counters, gauges and histograms with labels, rendered in the text
// exposition format (version 0.0.4). Thread-safety: values are atomics; `Family::with()` finds a
// child this thread used recently without a lock, and otherwise takes the family's mutex. Children
// are never removed, so references stay valid for the registry's lifetime.
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace va::metrics {

class Counter {
 public:
  void inc(double v = 1) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  explicit Histogram(const std::vector<double>& bounds);
  void observe(double v);
  void render(std::string& out, std::string_view name, std::string_view labels) const;

 private:
  const std::vector<double>& bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;  // one per bound, plus +Inf
  std::atomic<double> sum_{0};
  std::atomic<std::uint64_t> count_{0};
};

enum class Type { counter, gauge, histogram };

class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, Type type, std::vector<std::string> labels)
      : name_(std::move(name)), help_(std::move(help)), type_(type), labels_(std::move(labels)) {}
  virtual ~FamilyBase() = default;
  void render(std::string& out) const;

 protected:
  virtual void render_children(std::string& out) const = 0;
  std::string label_text(const std::vector<std::string>& values) const;
  std::string name_, help_;
  Type type_;
  std::vector<std::string> labels_;
  mutable std::mutex mu_;
  // Never reused, unlike an address: what a thread's cache of children (Family::with) knows a
  // family by, so that a family destroyed and another made in its place cannot be confused.
  const std::uint64_t id_ = next_id_.fetch_add(1, std::memory_order_relaxed);

 private:
  static inline std::atomic<std::uint64_t> next_id_{1};
};

template <class M>
class Family : public FamilyBase {
 public:
  using FamilyBase::FamilyBase;
  std::vector<double> bounds;  // histograms only

  // The child for these label values (created on first use). Values are in label order. Found
  // without copying them, and without the lock when this thread asked for it recently: every
  // request counts itself, mostly under the same few values (bench/README.md, "Tenth round").
  M& with(std::initializer_list<std::string_view> values) {
    for (const auto& c : recent_) {
      if (c.family == id_ && std::ranges::equal(c.values, values)) {
        return *c.child;
      }
    }
    M* child = nullptr;
    {
      std::lock_guard lock(mu_);
      auto it = children_.find(values);
      if (it == children_.end()) {
        it =
            children_.emplace(std::vector<std::string>(values.begin(), values.end()), make()).first;
      }
      child = it->second.get();
    }
    auto& slot = recent_[next_slot_++ % recent_.size()];
    slot = Recent{id_, std::vector<std::string>(values.begin(), values.end()), child};
    return *child;
  }

 private:
  struct Recent {
    std::uint64_t family = 0;
    std::vector<std::string> values;
    M* child = nullptr;
  };
  // This thread's children found last, of every family of this type: few enough to scan.
  static inline thread_local std::array<Recent, 8> recent_;
  static inline thread_local std::size_t next_slot_ = 0;

  std::unique_ptr<M> make() {
    if constexpr (std::is_same_v<M, Histogram>) {
      return std::make_unique<M>(bounds);
    } else {
      return std::make_unique<M>();
    }
  }
  void render_children(std::string& out) const override;
  // Label values compared as strings, whatever holds them.
  struct ValuesLess {
    using is_transparent = void;
    template <class A, class B>
    bool operator()(const A& a, const B& b) const {
      return std::lexicographical_compare(
          a.begin(), a.end(), b.begin(), b.end(),
          [](std::string_view x, std::string_view y) { return x < y; });
    }
  };
  std::map<std::vector<std::string>, std::unique_ptr<M>, ValuesLess> children_;
};

// A gauge whose samples are taken when /metrics is rendered, from sources that come and go with
// what they describe (one backend's pods): no series is left behind when a pod leaves, as it
// would be by a Family, whose children are never removed.
class SampledGauge : public FamilyBase {
 public:
  using Samples = std::vector<std::pair<std::vector<std::string>, double>>;
  using Source = std::function<void(Samples&)>;
  using FamilyBase::FamilyBase;
  // Returns the id that remove() takes. Any thread.
  std::uint64_t add(Source source);
  void remove(std::uint64_t id);

 private:
  void render_children(std::string& out) const override;
  std::vector<std::pair<std::uint64_t, Source>> sources_;  // under mu_
  std::uint64_t next_ = 1;
};

class Registry {
 public:
  SampledGauge& sampled_gauge(std::string name, std::string help, std::vector<std::string> labels);
  Family<Counter>& counter(std::string name, std::string help, std::vector<std::string> labels);
  Family<Gauge>& gauge(std::string name, std::string help, std::vector<std::string> labels);
  Family<Histogram>& histogram(std::string name, std::string help, std::vector<std::string> labels,
                               std::vector<double> bounds);
  std::string render() const;

 private:
  template <class M>
  Family<M>& add(std::string name, std::string help, Type type, std::vector<std::string> labels);
  std::vector<std::unique_ptr<FamilyBase>> families_;
};

// Formats a sample value as Prometheus expects (integers without a fraction, +Inf, NaN).
std::string format_value(double v);

}  // namespace va::metrics
