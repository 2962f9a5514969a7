// The floor of any proxy on this machine: a keep-alive HTTP/1.1 relay written straight on epoll
// (edge-triggered, one thread), without Asio, coroutines or Beast. It finds each message's end
// (the blank line, then Content-Length bytes) and passes its bytes on unchanged; each client
// connection gets its own upstream connection. Nothing else: no chunked bodies, no limits, no
// header rewriting, no timeouts. A benchmark peer only.
//
//   floor-epoll LISTEN_PORT UPSTREAM_PORT      (127.0.0.1 both)
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <string_view>

#include "floor.hpp"

namespace {

struct Pair;

// One side of a relayed connection: its socket and the bytes read from it but not yet passed on.
struct Side {
  Pair* pair;
  int fd = -1;
  std::string in{};
};

struct Pair {
  Side client{this};
  Side upstream{this};
  Side& other(Side& s) { return &s == &client ? upstream : client; }
};

void fail(const char* what) {
  std::cerr << "floor-epoll: " << what << ": " << std::strerror(errno) << "\n";
  std::exit(1);
}

sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

void no_delay(int fd) {
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const auto n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) {
      return false;  // a floor proxy: a full send buffer ends the connection too
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

void close_pair(Pair* p) {
  ::close(p->client.fd);
  ::close(p->upstream.fd);
  delete p;  // epoll forgets closed descriptors; events already returned name only this pair
}

// Reads what `s` has, then passes each whole message to the other side. False: close the pair.
bool relay(Side& s) {
  char buf[16384];
  for (;;) {
    const auto n = ::recv(s.fd, buf, sizeof buf, 0);
    if (n > 0) {
      s.in.append(buf, static_cast<std::size_t>(n));
      if (static_cast<std::size_t>(n) < sizeof buf) {
        break;  // drained: edge-triggered epoll reports the next bytes
      }
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    }
    return false;
  }
  std::size_t done = 0;
  while (const auto len = floor_proxy::message_length(std::string_view(s.in).substr(done))) {
    if (!write_all(s.pair->other(s).fd, std::string_view(s.in).substr(done, len))) {
      return false;
    }
    done += len;
  }
  s.in.erase(0, done);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const auto [listen_port, upstream_port] = floor_proxy::ports(argc, argv, "floor-epoll");
  const auto listen_at = loopback(listen_port);
  const auto upstream_at = loopback(upstream_port);
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  const int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(listener, reinterpret_cast<const sockaddr*>(&listen_at), sizeof listen_at) != 0 ||
      ::listen(listener, 1024) != 0) {
    fail("listen");
  }
  const int ep = ::epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the listener
  epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
  epoll_event events[128];
  Side gone{nullptr};  // stands in for the events of a pair closed earlier in the same batch
  for (;;) {
    const int n = ::epoll_wait(ep, events, 128, -1);
    for (int i = 0; i < n; ++i) {
      auto* side = static_cast<Side*>(events[i].data.ptr);
      if (side == &gone) {
        continue;
      }
      if (side == nullptr) {
        while (true) {
          const int c = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK);
          if (c < 0) {
            break;
          }
          const int u = ::socket(AF_INET, SOCK_STREAM, 0);
          // Loopback: a blocking connect returns at once; then non-blocking like the client.
          if (::connect(u, reinterpret_cast<const sockaddr*>(&upstream_at), sizeof upstream_at)) {
            ::close(c);
            ::close(u);
            continue;
          }
          ::fcntl(u, F_SETFL, O_NONBLOCK);
          no_delay(c);
          no_delay(u);
          auto* p = new Pair;
          p->client.fd = c;
          p->upstream.fd = u;
          for (Side* s : {&p->client, &p->upstream}) {
            epoll_event e{};
            e.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
            e.data.ptr = s;
            epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &e);
          }
        }
        continue;
      }
      if (!relay(*side)) {
        Pair* p = side->pair;
        for (int j = i + 1; j < n; ++j) {  // the other side's event may be later in this batch
          auto* later = static_cast<Side*>(events[j].data.ptr);
          if (later != nullptr && later != &gone && later->pair == p) {
            events[j].data.ptr = &gone;
          }
        }
        close_pair(p);
      }
    }
  }
}
