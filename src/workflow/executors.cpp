// Interrupts, sleepers and the built-in step executors (exec; http and llm over injected callers).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "workflow/workflow.h"

namespace switchboard::workflow {

// ---- Interrupt ------------------------------------------------------------------------------

Interrupt::Interrupt(const Clock& clock, const Interrupt* parent, MonoTime deadline,
                     int64_t timeout_ms)
    : clock_(clock), parent_(parent), deadline_(deadline), timeout_ms_(timeout_ms) {}

void Interrupt::cancel(Status reason) {
  std::lock_guard lock(mu_);
  if (cancelled_.load(std::memory_order_relaxed)) return;
  reason_ = std::move(reason);
  cancelled_.store(true, std::memory_order_release);
}

Status Interrupt::check() const {
  if (cancelled_.load(std::memory_order_acquire)) {
    std::lock_guard lock(mu_);
    return reason_;
  }
  if (parent_) {
    Status p = parent_->check();
    if (!p.ok()) return p;
  }
  if (deadline_ != MonoTime::max() && clock_.now() >= deadline_)
    return Status::deadline_exceeded("timed out after " + std::to_string(timeout_ms_) + " ms");
  return Status();
}

// ---- Sleepers -------------------------------------------------------------------------------

Status RealSleeper::sleep_until(WallTime t, const Interrupt& interrupt) {
  for (;;) {
    if (Status st = interrupt.check(); !st.ok()) return st;
    auto now = clock_.wall_now();
    if (now >= t) return Status();
    auto left = std::chrono::duration_cast<Millis>(t - now) + Millis(1);
    std::this_thread::sleep_for(std::min<Millis>(left, slice_));
  }
}

Status FakeSleeper::sleep_until(WallTime t, const Interrupt& interrupt) {
  if (Status st = interrupt.check(); !st.ok()) return st;
  auto now = clock_.wall_now();
  Millis d = now >= t ? Millis(0) : std::chrono::ceil<Millis>(t - now);
  {
    std::lock_guard lock(mu_);
    waits_.push_back(d);
  }
  if (d.count() > 0) clock_.advance(d);
  return interrupt.check();
}

std::vector<Millis> FakeSleeper::waits() const {
  std::lock_guard lock(mu_);
  return waits_;
}

// ---- exec -----------------------------------------------------------------------------------

namespace {

std::string str_or(const json::object& o, const char* k, std::string dflt) {
  auto it = o.find(k);
  if (it == o.end() || it->value().is_null()) return dflt;
  if (it->value().is_string()) return std::string(it->value().as_string());
  return json::serialize(it->value());
}

// PATH lookup done before fork: the child of a multi-threaded process may only call
// async-signal-safe functions.
std::string resolve_program(const std::string& name, const std::string& path_env) {
  if (name.find('/') != std::string::npos) return name;
  size_t start = 0;
  while (start <= path_env.size()) {
    size_t colon = path_env.find(':', start);
    std::string dir =
        path_env.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    std::string full = (dir.empty() ? "." : dir) + "/" + name;
    if (access(full.c_str(), X_OK) == 0) return full;
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return name;
}

void kill_group(pid_t pgid) {
  ::kill(-pgid, SIGKILL);
}

class ExecExecutor final : public StepExecutor {
 public:
  Result<json::value> execute(const StepRequest& req, const Interrupt& interrupt) override {
    if (!req.input.is_object()) return Status::invalid_argument("exec: input must be an object");
    const auto& in = req.input.as_object();
    std::vector<std::string> argv;
    if (auto it = in.find("argv"); it != in.end() && it->value().is_array()) {
      for (const auto& a : it->value().as_array())
        argv.push_back(a.is_string() ? std::string(a.as_string()) : json::serialize(a));
    }
    if (argv.empty()) return Status::invalid_argument("exec: argv must be a non-empty list");
    size_t max_out = 1 << 20;
    if (auto it = in.find("max_output_bytes"); it != in.end() && it->value().is_int64())
      max_out = static_cast<size_t>(std::max<int64_t>(0, it->value().as_int64()));
    std::string cwd = str_or(in, "cwd", "");

    // Environment: never ours, which holds the gateway's secrets (provider keys, the admin key):
    // only what a program needs to be found and to behave, then the step's, then the
    // idempotency key (workflow.h make_exec_executor).
    std::map<std::string, std::string> env;
    env["PATH"] = "/usr/bin:/bin";
    for (const char* name : {"PATH", "HOME", "LANG"}) {
      if (const char* v = std::getenv(name)) env[name] = v;
    }
    if (auto it = in.find("env"); it != in.end() && it->value().is_object()) {
      for (const auto& kv : it->value().as_object())
        env[kv.key()] = kv.value().is_string() ? std::string(kv.value().as_string())
                                               : json::serialize(kv.value());
    }
    env["SWITCHBOARD_RUN_ID"] = req.run_id;
    env["SWITCHBOARD_STEP_ID"] = req.step_id;
    env["SWITCHBOARD_ATTEMPT"] = std::to_string(req.attempt);
    std::string program = resolve_program(argv[0], env["PATH"]);

    std::vector<std::string> env_strings;
    for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
    std::vector<char*> cargv, cenv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    for (auto& e : env_strings) cenv.push_back(e.data());
    cenv.push_back(nullptr);

    int out_pipe[2], err_pipe[2], exec_pipe[2];
    if (pipe2(out_pipe, O_CLOEXEC) != 0)
      return Status::io_error("pipe: " + std::string(strerror(errno)));
    if (pipe2(err_pipe, O_CLOEXEC) != 0) {
      close(out_pipe[0]);
      close(out_pipe[1]);
      return Status::io_error("pipe: " + std::string(strerror(errno)));
    }
    if (pipe2(exec_pipe, O_CLOEXEC) != 0) {
      for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) close(fd);
      return Status::io_error("pipe: " + std::string(strerror(errno)));
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
      for (int fd :
           {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1], exec_pipe[0], exec_pipe[1]})
        close(fd);
      return Status::io_error("fork: " + std::string(strerror(errno)));
    }
    if (pid == 0) {
      // Child: async-signal-safe calls only.
      setpgid(0, 0);
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // no orphan if the executor dies (kill -9 included)
      if (getppid() != parent) _exit(127);
      int devnull = open("/dev/null", O_RDONLY);
      if (devnull >= 0) dup2(devnull, 0);
      dup2(out_pipe[1], 1);
      dup2(err_pipe[1], 2);
      int err = 0;
      if (!cwd.empty() && chdir(cwd.c_str()) != 0) {
        err = errno;
      } else {
        execve(program.c_str(), cargv.data(), cenv.data());
        err = errno;
      }
      ssize_t n = write(exec_pipe[1], &err, sizeof err);
      (void)n;
      _exit(127);
    }
    setpgid(pid, pid);  // also here: whichever runs first, the group exists before any kill
    close(out_pipe[1]);
    close(err_pipe[1]);
    close(exec_pipe[1]);

    int child_errno = 0;
    ssize_t got = read(exec_pipe[0], &child_errno, sizeof child_errno);  // EOF on successful exec
    close(exec_pipe[0]);
    if (got == static_cast<ssize_t>(sizeof child_errno)) {
      waitpid(pid, nullptr, 0);
      close(out_pipe[0]);
      close(err_pipe[0]);
      return Status::invalid_argument("exec " + argv[0] + ": " +
                                      (cwd.empty() ? "" : "cwd " + cwd + ": ") +
                                      std::string(strerror(child_errno)));
    }

    std::string out, err;
    bool truncated = false;
    int fds[2] = {out_pipe[0], err_pipe[0]};
    std::string* bufs[2] = {&out, &err};
    bool open_fd[2] = {true, true};
    int status = 0;
    bool reaped = false;
    Status stopped;
    char buf[16384];
    while (open_fd[0] || open_fd[1] || !reaped) {
      if (stopped.ok()) {
        stopped = interrupt.check();
        if (!stopped.ok()) kill_group(pid);
      }
      if (!reaped) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
          reaped = true;
          // Stragglers of the group (background children) go with the step.
          kill_group(pid);
        }
      }
      pollfd pfds[2];
      int n = 0;
      int map[2];
      for (int i = 0; i < 2; ++i) {
        if (open_fd[i]) {
          pfds[n] = {fds[i], POLLIN, 0};
          map[n++] = i;
        }
      }
      if (n == 0) {
        if (!reaped) {
          if (stopped.ok()) {
            std::this_thread::sleep_for(Millis(5));
          } else {
            waitpid(pid, &status, 0);
            reaped = true;
          }
        }
        continue;
      }
      int pr = poll(pfds, n, 20);
      if (pr < 0 && errno != EINTR) break;
      for (int j = 0; j < n && pr > 0; ++j) {
        if (!(pfds[j].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        int i = map[j];
        ssize_t r = read(fds[i], buf, sizeof buf);
        if (r <= 0) {
          if (r < 0 && errno == EINTR) continue;
          open_fd[i] = false;
          close(fds[i]);
          continue;
        }
        size_t room = max_out > bufs[i]->size() ? max_out - bufs[i]->size() : 0;
        if (static_cast<size_t>(r) > room) truncated = true;
        bufs[i]->append(buf, std::min(room, static_cast<size_t>(r)));
      }
    }
    for (int i = 0; i < 2; ++i)
      if (open_fd[i]) close(fds[i]);
    if (!reaped) {
      kill_group(pid);
      waitpid(pid, &status, 0);
    }
    if (!stopped.ok()) return stopped;

    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    json::object o;
    o["exit_code"] = code;
    o["stdout"] = out;
    o["stderr"] = err;
    if (truncated) o["truncated"] = true;
    if (code != 0) {
      std::string tail = err.size() > 500 ? err.substr(err.size() - 500) : err;
      while (!tail.empty() && (tail.back() == '\n' || tail.back() == '\r')) tail.pop_back();
      return Status::unavailable("exit code " + std::to_string(code) +
                                 (tail.empty() ? "" : ": " + tail));
    }
    return json::value(std::move(o));
  }
};

// ---- http -----------------------------------------------------------------------------------

class HttpExecutor final : public StepExecutor {
 public:
  explicit HttpExecutor(std::shared_ptr<HttpCaller> caller) : caller_(std::move(caller)) {}

  Result<json::value> execute(const StepRequest& req, const Interrupt& interrupt) override {
    if (!req.input.is_object()) return Status::invalid_argument("http: input must be an object");
    const auto& in = req.input.as_object();
    HttpCall call;
    call.client = req.client;
    call.method = str_or(in, "method", "GET");
    call.url = str_or(in, "url", "");
    if (call.url.empty()) return Status::invalid_argument("http: url is required");
    call.timeout_ms = req.timeout_ms;
    bool has_content_type = false;
    if (auto it = in.find("headers"); it != in.end() && it->value().is_object()) {
      for (const auto& kv : it->value().as_object()) {
        std::string v = kv.value().is_string() ? std::string(kv.value().as_string())
                                               : json::serialize(kv.value());
        std::string k(kv.key());
        if (strcasecmp(k.c_str(), "content-type") == 0) has_content_type = true;
        call.headers.emplace_back(k, v);
      }
    }
    if (auto it = in.find("body"); it != in.end() && !it->value().is_null()) {
      if (it->value().is_string()) {
        call.body = std::string(it->value().as_string());
      } else {
        call.body = json::serialize(it->value());
        if (!has_content_type) call.headers.emplace_back("content-type", "application/json");
      }
    }
    auto reply = caller_->call(call, interrupt);
    if (!reply.ok()) return reply.status();
    json::object o;
    o["status"] = reply->status;
    boost::system::error_code ec;
    json::value body = json::parse(reply->body, ec);
    if (ec)
      o["body"] = reply->body;
    else
      o["body"] = std::move(body);
    bool ok = reply->status < 400;
    if (auto it = in.find("ok_status"); it != in.end() && it->value().is_array()) {
      ok = false;
      for (const auto& s : it->value().as_array())
        if (s.is_number() && s.to_number<int64_t>() == reply->status) ok = true;
    }
    if (!ok) {
      std::string b = reply->body.substr(0, 300);
      return Status::unavailable("HTTP " + std::to_string(reply->status) + ": " + b);
    }
    return json::value(std::move(o));
  }

 private:
  std::shared_ptr<HttpCaller> caller_;
};

// ---- llm ------------------------------------------------------------------------------------

class LlmExecutor final : public StepExecutor {
 public:
  explicit LlmExecutor(std::shared_ptr<LlmCaller> caller) : caller_(std::move(caller)) {}

  Result<json::value> execute(const StepRequest& req, const Interrupt& interrupt) override {
    if (!req.input.is_object()) return Status::invalid_argument("llm: input must be an object");
    const auto& in = req.input.as_object();
    json::object body;
    body["model"] = str_or(in, "route", str_or(in, "model", "auto"));
    auto msgs = in.find("messages");
    if (msgs == in.end() || !msgs->value().is_array())
      return Status::invalid_argument("llm: messages must be a list");
    json::array messages;
    for (const auto& m : msgs->value().as_array()) {
      if (!m.is_object()) return Status::invalid_argument("llm: each message must be an object");
      json::object mo = m.as_object();
      // Content that a template turned into JSON (e.g. a previous step's output) becomes text.
      if (auto c = mo.find("content"); c != mo.end() && !c->value().is_string())
        c->value() = json::serialize(c->value());
      messages.push_back(std::move(mo));
    }
    body["messages"] = std::move(messages);
    if (auto it = in.find("max_tokens"); it != in.end()) body["max_tokens"] = it->value();
    if (auto it = in.find("temperature"); it != in.end()) body["temperature"] = it->value();
    std::vector<std::pair<std::string, std::string>> headers;
    if (auto c = str_or(in, "complexity", ""); !c.empty())
      headers.emplace_back("x-switchboard-complexity", c);
    if (auto c = str_or(in, "category", ""); !c.empty())
      headers.emplace_back("x-switchboard-category", c);
    if (auto c = str_or(in, "session", ""); !c.empty())
      headers.emplace_back("x-switchboard-session", c);
    // The idempotency key of this attempt, for the gateway's logs.
    headers.emplace_back("x-switchboard-workflow-step",
                         req.run_id + "/" + req.step_id + "#" + std::to_string(req.attempt));
    auto reply =
        caller_->complete(req.client, json::serialize(body), headers, req.timeout_ms, interrupt);
    if (!reply.ok()) return reply.status();
    boost::system::error_code ec;
    json::value resp = json::parse(reply->body, ec);
    if (reply->status >= 400) {
      std::string msg = reply->body.substr(0, 300);
      if (!ec && resp.is_object()) {
        if (auto* e = resp.as_object().if_contains("error"); e && e->is_object()) {
          if (auto* m = e->as_object().if_contains("message"); m && m->is_string())
            msg = std::string(m->as_string());
        }
      }
      return Status::unavailable("llm: HTTP " + std::to_string(reply->status) + ": " + msg);
    }
    if (ec || !resp.is_object()) return Status::unavailable("llm: response is not JSON");
    json::object out;
    const auto& r = resp.as_object();
    out["content"] = "";
    if (auto* ch = r.if_contains("choices"); ch && ch->is_array() && !ch->as_array().empty()) {
      const auto& c0 = ch->as_array()[0];
      if (c0.is_object()) {
        if (auto* m = c0.as_object().if_contains("message"); m && m->is_object()) {
          if (auto* t = m->as_object().if_contains("content"); t && t->is_string())
            out["content"] = *t;
        }
        if (auto* f = c0.as_object().if_contains("finish_reason")) out["finish_reason"] = *f;
      }
    }
    if (auto* m = r.if_contains("model")) out["model"] = *m;
    if (auto* u = r.if_contains("usage")) out["usage"] = *u;
    // What a later step's `feedback` names when it reports the verdict on this answer.
    if (auto id = reply->header("x-switchboard-request-id"); !id.empty()) out["request_id"] = id;
    // What the answer cost (the gateway's prices), counted against the run's max_cost_usd.
    if (auto c = reply->header("x-switchboard-cost-usd"); !c.empty()) {
      const std::string text(c);
      char* end = nullptr;
      const double cost = std::strtod(text.c_str(), &end);
      if (end != text.c_str() && cost >= 0 && std::isfinite(cost)) out["cost_usd"] = cost;
    }
    return json::value(std::move(out));
  }

 private:
  std::shared_ptr<LlmCaller> caller_;
};

}  // namespace

std::string_view HttpReply::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k.size() == name.size() && strncasecmp(k.data(), name.data(), k.size()) == 0) return v;
  return {};
}

std::shared_ptr<StepExecutor> make_exec_executor() {
  return std::make_shared<ExecExecutor>();
}
std::shared_ptr<StepExecutor> make_http_executor(std::shared_ptr<HttpCaller> caller) {
  return std::make_shared<HttpExecutor>(std::move(caller));
}
std::shared_ptr<StepExecutor> make_llm_executor(std::shared_ptr<LlmCaller> caller) {
  return std::make_shared<LlmExecutor>(std::move(caller));
}

}  // namespace switchboard::workflow
