#include "sim/prefix_cache.hpp"

#include <functional>
#include <string_view>

namespace va::sim {

PrefixCache::PrefixCache(std::size_t capacity, int block_size)
    : capacity_(capacity), block_size_(block_size < 1 ? 1 : block_size) {}

std::vector<std::uint64_t> PrefixCache::blocks(const std::vector<std::string>& tokens) const {
  std::vector<std::uint64_t> out;
  const auto size = static_cast<std::size_t>(block_size_);
  std::uint64_t chain = 0;
  for (std::size_t end = size; end <= tokens.size(); end += size) {
    for (std::size_t i = end - size; i < end; ++i) {
      // boost::hash_combine's mixing, over the tokens one after another.
      chain ^= std::hash<std::string_view>{}(tokens[i]) + 0x9e3779b97f4a7c15ULL + (chain << 6) +
               (chain >> 2);
    }
    out.push_back(chain);
  }
  return out;
}

std::size_t PrefixCache::use(const std::vector<std::uint64_t>& blocks) {
  std::size_t hits = 0;
  while (hits < blocks.size() && where_.count(blocks[hits]) > 0) {
    ++hits;
  }
  if (capacity_ == 0) {
    return 0;
  }
  // Last block first, so that a prompt's leading blocks end up the most recent: a full cache
  // evicts tails before the prefixes that other prompts share (vLLM frees a request's blocks in
  // reverse order for the same reason).
  for (auto i = blocks.rbegin(); i != blocks.rend(); ++i) {
    const auto b = *i;
    if (auto it = where_.find(b); it != where_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);  // used again: the most recent
      continue;
    }
    lru_.push_front(b);
    where_[b] = lru_.begin();
    if (lru_.size() > capacity_) {
      where_.erase(lru_.back());
      lru_.pop_back();
    }
  }
  return hits;
}

}  // namespace va::sim
