#pragma once
// Small helpers of vllm-sim (private to src/sim): clocks and ids for the responses, the rough
// token counting, and the generated token texts. parse_duration() is declared in sim/sim.hpp.
#include <boost/json.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace va::sim {

// Nanoseconds since the Unix epoch on CLOCK_REALTIME (comparable across processes).
std::int64_t realtime_ns();

// Seconds since the Unix epoch: the "created" field of OpenAI's objects.
std::int64_t unix_seconds();

// n random lowercase hex digits, for request ids.
std::string random_hex(std::size_t n);

std::string to_lower(std::string_view s);

int count_words(std::string_view s);

// A rough prompt length: one token per word of text, one per element of a token-id list; at
// least 1. `chat` reads "messages", otherwise "prompt".
int count_prompt_tokens(const boost::json::object& body, bool chat);
// The same tokens, as texts (a token id as its decimal text): what the prefix cache hashes.
std::vector<std::string> prompt_tokens(const boost::json::object& body, bool chat);

// The text of generated token i: "tok<i> " (plain ASCII, so no JSON escaping is needed).
std::string token_text(int i);

}  // namespace va::sim
