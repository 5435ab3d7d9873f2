// `switchboard serve` as a child process, for the tests that kill it (-9) or run several.
#pragma once

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>

#include "gateway_fixture.h"
#include "test_support.h"

namespace switchboard::gwtest {

// One `switchboard serve` child process; killed with SIGKILL when the object goes.
class ServeProcess {
 public:
  ServeProcess(const std::string& config, const std::string& log_path)
      : config_(config), log_path_(log_path) {
    spawn();
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

  // Healthy within 15 s. A port handed out by free_port() can be taken by some other socket's
  // ephemeral port before the child binds it; a child that could not listen is started again on
  // a fresh port (port() changes), so read port() after ready().
  bool ready() {
    for (int attempt = 0; attempt < 5; ++attempt) {
      bool exited = false;
      const bool healthy = testsupport::wait_until(
          [&] {
            if (get(port_, "/healthz").status == 200) return true;
            int status = 0;
            exited = pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == pid_;
            return exited;
          },
          std::chrono::seconds(15));
      if (healthy && !exited) {
        if (!port_shared()) return true;
        // Another process listens on the same port (SO_REUSEPORT, which the server sets for
        // its per-thread acceptors, lets a second listener in: a concurrent test's gateway that
        // was handed the port free_port() had just released). Its answers would be taken for
        // this gateway's: start again on another port.
        std::fprintf(stderr, "port %u is shared with another process; moving the gateway\n",
                     unsigned(port_));
        kill9();
        spawn();
        continue;
      }
      if (!exited || log_text().find("Address already in use", log_offset_) == std::string::npos)
        break;
      pid_ = -1;
      spawn();
    }
    std::fprintf(stderr, "gateway on port %u not ready; its log:\n%s\n", unsigned(port_),
                 log_text().substr(log_offset_).c_str());
    return false;
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
  void spawn() {
    log_offset_ = log_text().size();
    port_ = static_cast<uint16_t>(testsupport::free_port());
    const std::string listen = "127.0.0.1:" + std::to_string(port_);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a test that dies leaves no gateway behind
      int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execl(SWITCHBOARD_BINARY, SWITCHBOARD_BINARY, "serve", "--config", config_.c_str(),
              "--listen", listen.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  // Whether a listening TCP socket on port_ belongs to a process other than the child.
  bool port_shared() const {
    std::set<std::string> ours;
    const std::string fd_dir = "/proc/" + std::to_string(pid_) + "/fd";
    if (DIR* d = ::opendir(fd_dir.c_str())) {
      while (const dirent* e = ::readdir(d)) {
        char target[128];
        const std::string link = fd_dir + "/" + e->d_name;
        const ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
        if (n <= 0) continue;
        const std::string t(target, size_t(n));
        if (t.rfind("socket:[", 0) == 0) ours.insert(t.substr(8, t.size() - 9));
      }
      ::closedir(d);
    }
    for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
      std::ifstream f(table);
      std::string line;
      std::getline(f, line);  // header
      while (std::getline(f, line)) {
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        std::istringstream in(line);
        std::string sl, local, remote, st, queues, timer, retr, uid, timeout, inode;
        in >> sl >> local >> remote >> st >> queues >> timer >> retr >> uid >> timeout >> inode;
        if (st != "0A") continue;  // LISTEN
        const auto colon = local.rfind(':');
        if (colon == std::string::npos) continue;
        if (std::stoul(local.substr(colon + 1), nullptr, 16) != port_) continue;
        if (!ours.count(inode)) return true;
      }
    }
    return false;
  }
  std::string log_text() const {
    std::ifstream f(log_path_);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }

  std::string config_;
  std::string log_path_;
  size_t log_offset_ = 0;  // where this child's lines start in the log
  pid_t pid_ = -1;
  uint16_t port_ = 0;
};

}  // namespace switchboard::gwtest
