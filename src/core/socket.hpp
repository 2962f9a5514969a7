#pragma once
// What a connected socket's peer has done, seen without consuming anything (MSG_PEEK).
#include <sys/socket.h>

#include <cerrno>

namespace va {

enum class Peer { quiet, sent_data, closed };

// Non-blocking: `quiet` when nothing is waiting to be read, `sent_data` when bytes are, and
// `closed` after the peer's FIN or a reset.
inline Peer peek_peer(int fd) {
  char c;
  const auto n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) {
    return Peer::sent_data;
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    return Peer::quiet;
  }
  return Peer::closed;
}

}  // namespace va
