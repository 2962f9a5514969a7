#pragma once
// vllm-sim's prefix cache (private to src/sim), after vLLM's automatic prefix caching: the prompt
// in blocks of block_size tokens, each block named by a hash of every token up to its end, kept
// in a least-recently-used set of so many blocks, a prompt's last blocks evicted before its first
// (as vLLM frees them). A prompt hits on its leading blocks that are still there; only full blocks
// count, as in vLLM. Prefill then costs only the tokens after them
// (Settings::prefill_per_token), which is what prefix-aware routing saves.
#include <cstddef>
#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>
#include <vector>

namespace va::sim {

class PrefixCache {
 public:
  // `capacity` blocks (0: no cache, nothing ever hits) of `block_size` tokens.
  PrefixCache(std::size_t capacity, int block_size);

  // The chained hashes of the full blocks of `tokens`, in order.
  std::vector<std::uint64_t> blocks(const std::vector<std::string>& tokens) const;

  // The number of leading `blocks` found, after which all of them are kept (the least recently
  // used others evicted).
  std::size_t use(const std::vector<std::uint64_t>& blocks);

  int block_size() const { return block_size_; }

 private:
  std::size_t capacity_;
  int block_size_;
  std::list<std::uint64_t> lru_;  // most recently used first
  std::unordered_map<std::uint64_t, std::list<std::uint64_t>::iterator> where_;
};

}  // namespace va::sim
