// `switchboard serve` as a child process, for the tests that kill it (-9) or run several.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "gateway_fixture.h"
#include "test_support.h"

namespace switchboard::gwtest {

// One `switchboard serve` child process; killed with SIGKILL when the object goes.
class ServeProcess {
 public:
  ServeProcess(const std::string& config, const std::string& log_path) {
    port_ = static_cast<uint16_t>(testsupport::free_port());
    const std::string listen = "127.0.0.1:" + std::to_string(port_);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a test that dies leaves no gateway behind
      int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execl(SWITCHBOARD_BINARY, SWITCHBOARD_BINARY, "serve", "--config", config.c_str(),
              "--listen", listen.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~ServeProcess() { kill9(); }
  // SIGTERM: a drain and a clean stop; waits for the exit (true when it exited 0).
  bool terminate() {
    if (pid_ <= 0) return false;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  bool ready() const {
    return pid_ > 0 && testsupport::wait_until([&] { return get(port_, "/healthz").status == 200; },
                                               std::chrono::seconds(15));
  }
  // SIGKILL and reap: nothing runs after this, no destructor, no final flush.
  void kill9() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  uint16_t port_ = 0;
};

}  // namespace switchboard::gwtest
