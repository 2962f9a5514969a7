#pragma once
// A connected TCP pair on 127.0.0.1 for tests of code that reads or writes a socket: `ours` is the
// end under test, `peer` the other.
#include "core/net.hpp"

namespace va {

struct LoopbackPair {
  net::io_context ioc;
  Socket ours{ioc};
  Socket peer{ioc};
  LoopbackPair() {
    Acceptor acceptor(ioc, {net::ip::make_address("127.0.0.1"), 0});
    ours.connect(acceptor.local_endpoint());
    acceptor.accept(peer);
  }
};

}  // namespace va
