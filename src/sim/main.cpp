// vllm-sim: a GPU-free vLLM stand-in (see sim/sim.hpp).
#include "sim/sim.hpp"

int main(int argc, char** argv) { return va::sim::main(argc, argv); }
