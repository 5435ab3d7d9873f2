// The workflow service of a running gateway (workflow_api.h) and the blocking HTTP / gateway
// callers that workflow steps use (workflow_callers.h).
#include "gateway/workflow_api.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include "common/json.h"
#include "common/log.h"
#include "net/http_client.h"
#include "upstream/address_policy.h"

namespace switchboard::gateway {

namespace wf = switchboard::workflow;

// ---- callers ------------------------------------------------------------------------------------

Result<wf::HttpReply> blocking_fetch(const wf::HttpCall& call, const wf::Interrupt& interrupt,
                                     bool public_only) {
  asio::io_context ctx;
  net::HttpClient client(ctx.get_executor());
  net::HttpRequest req;
  req.method = call.method;
  req.url = call.url;
  req.body = call.body;
  req.headers = call.headers;
  if (public_only) {
    req.allow_address = [](const asio::ip::address& a) {
      if (a.is_v4()) {
        const auto b = a.to_v4().to_bytes();
        return upstream::is_public_address(b.data(), b.size());
      }
      const auto b = a.to_v6().to_bytes();
      return upstream::is_public_address(b.data(), b.size());
    };
  }
  if (call.timeout_ms > 0) req.deadline = MonoClock::now() + Millis(call.timeout_ms);
  net::HttpResponse res;
  net::TransportStatus st;
  bool done = false;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        st = co_await client.fetch(req, res);
        done = true;
      },
      asio::detached);
  // Short slices: the interrupt is polled between them, so a cancelled or timed-out step (or a
  // shutdown) leaves within ~20 ms; destroying `ctx` then abandons the request.
  while (!done) {
    if (Status s = interrupt.check(); !s.ok()) {
      ctx.stop();
      return s;
    }
    ctx.run_for(std::chrono::milliseconds(20));
    if (ctx.stopped() && !done) ctx.restart();
  }
  if (!st.ok()) return Status::unavailable(call.method + " " + call.url + ": " + st.message);
  wf::HttpReply reply;
  reply.status = res.head.status;
  reply.body = std::move(res.body);
  reply.headers = std::move(res.head.headers);
  return reply;
}

namespace {
class BlockingHttpCaller final : public wf::HttpCaller {
 public:
  explicit BlockingHttpCaller(std::function<std::vector<std::string>()> http_allow)
      : http_allow_(std::move(http_allow)) {}
  Result<wf::HttpReply> call(const wf::HttpCall& call, const wf::Interrupt& interrupt) override {
    // A run submitted over HTTP reaches public addresses only, unless the URL is under a prefix
    // the operator allows; the local user's runs ("" client) reach anything.
    const bool public_only =
        !call.client.empty() &&
        !(http_allow_ && upstream::url_allowed_by_prefix(call.url, http_allow_()));
    return blocking_fetch(call, interrupt, public_only);
  }

 private:
  std::function<std::vector<std::string>()> http_allow_;
};

// exec steps of runs submitted over HTTP run only when the configuration allows it (checked at
// each step, so a reload that turns it off stops runs already queued).
class GatedExecExecutor final : public wf::StepExecutor {
 public:
  GatedExecExecutor(std::shared_ptr<wf::StepExecutor> inner, std::function<bool()> allowed)
      : inner_(std::move(inner)), allowed_(std::move(allowed)) {}
  Result<boost::json::value> execute(const wf::StepRequest& request,
                                     const wf::Interrupt& interrupt) override {
    if (!request.client.empty() && !allowed_())
      return Status::permission_denied(
          "exec steps are disabled for workflow runs submitted over HTTP "
          "(workflows.allow_exec: false)");
    return inner_->execute(request, interrupt);
  }

 private:
  std::shared_ptr<wf::StepExecutor> inner_;
  std::function<bool()> allowed_;
};

}  // namespace

void apply_workflow_bounds(const WorkflowsConfig& w, wf::EngineOptions& opts) {
  opts.lease = Millis(w.lease_ms);
  // Three renewals a lease: one that fails (a busy or restarting database) leaves time for more.
  opts.heartbeat = std::min(opts.heartbeat, std::max(Millis(1), opts.lease / 3));
  opts.max_parallel = int(w.max_parallel);
  opts.budget.max_steps = w.budget.max_steps;
  opts.budget.max_tokens = w.budget.max_tokens;
  opts.budget.max_cost_usd = w.budget.max_cost_usd;
  opts.budget.max_time_ms = w.budget.max_time_ms;
}

std::shared_ptr<wf::StepExecutor> make_gated_exec_executor(std::function<bool()> allow_exec) {
  return std::make_shared<GatedExecExecutor>(wf::make_exec_executor(), std::move(allow_exec));
}

namespace {

bool uses_exec(const wf::StepDef& step) {
  if (step.kind == wf::StepKind::kExec) return true;
  if (step.child && uses_exec(*step.child)) return true;
  for (const auto& b : step.branches)
    if (uses_exec(b)) return true;
  return false;
}

// The gateway's message from an OpenAI-shaped error body, else the start of the body.
std::string error_message(const std::string& body) {
  boost::system::error_code ec;
  auto v = boost::json::parse(body, ec);
  if (!ec && v.is_object()) {
    if (auto* e = v.as_object().if_contains("error"); e && e->is_object()) {
      if (auto* m = e->as_object().if_contains("message"); m && m->is_string())
        return std::string(m->as_string());
    }
  }
  return body.substr(0, 300);
}
}  // namespace

std::shared_ptr<wf::HttpCaller> make_blocking_http_caller(
    std::function<std::vector<std::string>()> http_allow) {
  return std::make_shared<BlockingHttpCaller>(std::move(http_allow));
}

Result<wf::HttpReply> GatewayStepClient::complete(
    const std::string& client, const std::string& body,
    const std::vector<std::pair<std::string, std::string>>& headers, int64_t timeout_ms,
    const wf::Interrupt& interrupt) {
  auto target = resolve_(client);
  if (!target.ok()) return target.status();
  wf::HttpCall call;
  call.method = "POST";
  call.url = target->base_url + "/v1/chat/completions";
  call.body = body;
  call.headers = headers;
  call.headers.emplace_back("content-type", "application/json");
  if (!target->gateway_key.empty())
    call.headers.emplace_back("authorization", "Bearer " + target->gateway_key);
  call.timeout_ms = timeout_ms;
  return blocking_fetch(call, interrupt);
}

Status GatewayStepClient::send(const wf::FeedbackCall& fc, const wf::Interrupt& interrupt) {
  auto target = resolve_(fc.client);
  if (!target.ok()) return target.status();
  boost::json::object body;
  body["request_id"] = fc.request_id;
  body["success"] = fc.success;
  if (fc.score) body["score"] = *fc.score;
  wf::HttpCall call;
  call.method = "POST";
  call.url = target->base_url + "/v1/feedback";
  call.body = boost::json::serialize(body);
  call.headers.emplace_back("content-type", "application/json");
  if (!target->gateway_key.empty())
    call.headers.emplace_back("authorization", "Bearer " + target->gateway_key);
  call.timeout_ms = 10000;  // a verdict is a map lookup on the gateway; more means it is stuck
  auto reply = blocking_fetch(call, interrupt);
  if (!reply.ok()) return reply.status();
  if (reply->status == 200 || reply->status == 409) return Status();
  return Status::unavailable("feedback: HTTP " + std::to_string(reply->status) + ": " +
                             error_message(reply->body));
}

// ---- service ------------------------------------------------------------------------------------

Result<std::unique_ptr<WorkflowService>> WorkflowService::open(
    const Config& config, TargetResolver self,
    std::function<std::shared_ptr<const Config>()> current) {
  const bool shared = config.state.backend == "postgres";
  auto client = std::make_shared<GatewayStepClient>(std::move(self));
  wf::EngineOptions opts;
  opts.db_path = shared ? config.state.url : config.state.path;
  opts.synchronous = config.state.synchronous;
  opts.busy_timeout_ms = config.state.busy_timeout_ms;
  apply_workflow_bounds(config.workflows, opts);
  opts.executors.exec =
      make_gated_exec_executor([current] { return current()->workflows.allow_exec; });
  opts.executors.http = wf::make_http_executor(
      make_blocking_http_caller([current] { return current()->workflows.http_allow; }));
  opts.executors.llm = wf::make_llm_executor(client);
  opts.executors.feedback = client;
  opts.on_transition = [](const wf::Transition& t) {
    log::info("workflow {}: {}", t.run_id, t.to_line());
  };
  const Millis lease = opts.lease;
  auto engine = wf::Engine::open(std::move(opts));
  if (!engine.ok())
    return Status(engine.status().code(),
                  "workflow engine at " + (shared ? std::string("postgres") : config.state.path) +
                      ": " + engine.status().message());
  auto service = std::unique_ptr<WorkflowService>(
      new WorkflowService(std::move(*engine), lease, size_t(config.workflows.max_concurrent_runs),
                          shared ? kSharedPollPeriod : Millis(0)));
  service->current_config_ = std::move(current);
  return service;
}

WorkflowService::WorkflowService(std::unique_ptr<wf::Engine> engine, Millis scan_period,
                                 size_t max_concurrent_runs, Millis poll_period)
    : engine_(std::move(engine)),
      scan_period_(scan_period),
      poll_period_(poll_period),
      max_concurrent_runs_(std::max<size_t>(max_concurrent_runs, 1)) {}

WorkflowService::~WorkflowService() {
  stop();
  // Let API calls still queued finish (they only touch the engine, destroyed after this).
  api_pool_.join();
}

void WorkflowService::start() {
  std::lock_guard lock(mu_);
  if (stopping_ || supervisor_.joinable()) return;
  // On a shared database the runs table is every gateway's queue: the supervisor takes, every
  // poll period, as many unowned or lease-lapsed runs as this gateway has places (never the
  // whole queue, which the recovery scan would list). Alone on SQLite it scans once a lease.
  const bool shared = poll_period_.count() > 0;
  const Millis tick = shared ? poll_period_ : scan_period_;
  supervisor_ = std::thread([this, shared, tick] {
    shared ? take_runnable() : recover();
    std::unique_lock lk(mu_);
    while (!cv_.wait_for(lk, tick, [this] { return stopping_; })) {
      reap_finished();
      lk.unlock();
      shared ? take_runnable() : recover();
      lk.lock();
    }
  });
}

void WorkflowService::take_runnable() {
  size_t free = 0;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    const size_t busy = executing_.size() + queue_.size();
    free = busy < max_concurrent_runs_ ? max_concurrent_runs_ - busy : 0;
  }
  if (free == 0) return;
  auto ids = engine_->claim_next(int(free));
  if (!ids.ok()) {
    log::warn("workflow poll: {}", ids.status().message());
    return;
  }
  for (const auto& id : *ids) {
    // Claimed for us: run it here, or hand it back at once for another gateway.
    if (launch(id))
      log::info("workflow {}: taken from the shared queue", id);
    else
      engine_->release(id, "not run here");
  }
}

void WorkflowService::recover() {
  auto ids = engine_->interrupted_runs();
  if (!ids.ok()) {
    log::warn("workflow recovery: {}", ids.status().message());
    return;
  }
  for (const auto& id : *ids) {
    if (launch(id)) log::info("workflow {}: resuming an interrupted run", id);
  }
}

bool WorkflowService::launch(const std::string& run_id) {
  std::lock_guard lock(mu_);
  if (stopping_ || executing_.count(run_id) || queued_.count(run_id)) return false;
  reap_finished();
  queue_.push_back(run_id);
  queued_.insert(run_id);
  start_queued_locked();
  return true;
}

void WorkflowService::start_queued_locked() {
  while (!stopping_ && !queue_.empty() && executing_.size() < max_concurrent_runs_) {
    const std::string run_id = queue_.front();
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::thread t;
    try {
      t = std::thread([this, run_id, done] {
        auto r = engine_->run(run_id);
        if (!r.ok()) {
          // Another executor owns it, or this one is shutting down: not an error of the run.
          log::info("workflow {}: not run here: {}", run_id, r.status().message());
        } else {
          log::info("workflow {}: {}{}", run_id, wf::to_string(r->status),
                    r->error.empty() ? "" : ": " + r->error);
        }
        {
          std::lock_guard lk(mu_);
          executing_.erase(run_id);
          start_queued_locked();  // its place goes to the next run waiting
        }
        done->store(true);
      });
    } catch (const std::system_error& e) {
      // No thread to be had (a process or memory limit): the run stays pending and queued, and
      // is tried again when a run ends or at the next recovery scan; never a crash.
      log::error("workflow {}: cannot start a thread ({}); it waits", run_id, e.what());
      return;
    }
    queue_.pop_front();
    queued_.erase(run_id);
    executing_.insert(run_id);
    workers_.push_back(Worker{run_id, std::move(t), std::move(done)});
  }
}

void WorkflowService::reap_finished() {
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (it->done->load()) {
      it->thread.join();  // returns at once: the thread has finished its work
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
}

size_t WorkflowService::executing() const {
  std::lock_guard lock(mu_);
  return executing_.size();
}

size_t WorkflowService::queued() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

void WorkflowService::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && workers_.empty() && !supervisor_.joinable()) return;
    stopping_ = true;
    // Queued runs stay pending in the database: the next start resumes them.
    queue_.clear();
    queued_.clear();
  }
  cv_.notify_all();
  if (supervisor_.joinable()) supervisor_.join();
  engine_->shutdown();
  std::list<Worker> workers;
  {
    std::lock_guard lock(mu_);
    workers.swap(workers_);
  }
  for (auto& w : workers) w.thread.join();
}

// ---- HTTP API -----------------------------------------------------------------------------------

namespace {

Response invalid(std::string_view message, std::string_view code) {
  return error_response(http::status::bad_request, message, "invalid_request_error", code);
}

// 400 with every definition error, each with its line and column.
Response definition_errors(const std::vector<ConfigError>& errors) {
  boost::json::array list;
  std::string message;
  for (const auto& e : errors) {
    boost::json::object o;
    o["line"] = e.line;
    o["column"] = e.column;
    o["path"] = e.path;
    o["message"] = e.message;
    list.push_back(std::move(o));
    message += (message.empty() ? "" : "; ") + e.to_string();
  }
  boost::json::object err;
  err["message"] = "invalid workflow definition: " + message;
  err["type"] = "invalid_request_error";
  err["code"] = "invalid_workflow";
  err["errors"] = std::move(list);
  boost::json::object body;
  body["error"] = std::move(err);
  return json_response(http::status::bad_request, boost::json::serialize(body));
}

Response method_not_allowed(std::string_view use) {
  return error_response(http::status::method_not_allowed, use, "invalid_request_error",
                        "method_not_allowed");
}

}  // namespace

template <typename F>
asio::awaitable<void> WorkflowService::on_pool(F&& fn) {
  // The handler's coroutine resumes on its own io_context thread once `fn` ran on the pool.
  co_await asio::co_spawn(
      api_pool_.get_executor(),
      [&fn]() -> asio::awaitable<void> {
        fn();
        co_return;
      },
      asio::use_awaitable);
}

asio::awaitable<void> WorkflowService::handle(Exchange& ex, std::string_view target,
                                              const WorkflowCaller& caller) {
  constexpr std::string_view kRuns = "/v1/workflows/runs";
  const auto method = ex.request.method();
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      ex.response = error_response(http::status::service_unavailable, "the gateway is stopping",
                                   "server_error", "shutting_down");
      co_return;
    }
  }
  if (target == kRuns || target == "/v1/workflows/runs/") {
    if (method == http::verb::get) {
      Response res;
      co_await on_pool([&] {
        auto runs = engine_->list_runs(1000, caller.admin ? nullptr : &caller.client);
        if (!runs.ok()) {
          res = error_response(http::status::internal_server_error, runs.status().message(),
                               "server_error", "store_error");
          return;
        }
        std::string data = wf::format_runs(*runs, true);
        while (!data.empty() && data.back() == '\n') data.pop_back();
        res = json_response(http::status::ok, "{\"object\":\"list\",\"data\":" + data + "}");
      });
      ex.response = std::move(res);
      co_return;
    }
    if (method != http::verb::post) {
      ex.response = method_not_allowed("use GET or POST");
      co_return;
    }
    Response res;
    std::string run_id;
    co_await on_pool([&] {
      boost::system::error_code ec;
      auto doc = boost::json::parse(ex.request.body(), ec);
      if (ec || !doc.is_object()) {
        res = invalid("body must be a JSON object {\"definition\": ..., \"input\": {...}}",
                      "invalid_body");
        return;
      }
      const auto& o = doc.as_object();
      const auto* d = o.if_contains("definition");
      std::string text;
      if (d && d->is_string()) {
        text = std::string(d->as_string());
      } else if (d && d->is_object()) {
        text = boost::json::serialize(*d);
      } else {
        res =
            invalid("'definition' must be a workflow object or its YAML/JSON text", "invalid_body");
        return;
      }
      boost::json::value input = boost::json::object();
      if (const auto* in = o.if_contains("input"); in && !in->is_null()) {
        if (!in->is_object()) {
          res = invalid("'input' must be a JSON object", "invalid_input");
          return;
        }
        input = *in;
      }
      for (const auto& kv : o) {
        if (kv.key() != "definition" && kv.key() != "input") {
          res =
              invalid("unknown field '" + std::string(kv.key()) + "' (expected definition, input)",
                      "invalid_body");
          return;
        }
      }
      auto load = wf::parse_definition(text, "definition");
      if (!load.ok()) {
        res = definition_errors(load.errors);
        return;
      }
      // A client key must not be a way to run commands as the gateway's user.
      if (!current_config_()->workflows.allow_exec) {
        for (const auto& step : load.definition->steps) {
          if (!uses_exec(step)) continue;
          res = error_response(http::status::forbidden,
                               "step '" + step.id +
                                   "' runs a command: exec steps are disabled for workflow runs "
                                   "submitted over HTTP (workflows.allow_exec: false)",
                               "permission_error", "exec_not_allowed");
          return;
        }
      }
      // Born claimed when this gateway has a place for it, so that it starts here at once;
      // otherwise it waits unowned, for this gateway's queue or any other gateway's poll.
      bool has_place = false;
      {
        std::lock_guard lock(mu_);
        has_place = !stopping_ && executing_.size() + queue_.size() < max_concurrent_runs_;
      }
      auto id = engine_->create_run(*load.definition, input, caller.client, has_place);
      if (!id.ok()) {
        res = id.status().code() == StatusCode::kInvalidArgument
                  ? invalid(id.status().message(), "invalid_input")
                  : error_response(http::status::internal_server_error, id.status().message(),
                                   "server_error", "store_error");
        return;
      }
      run_id = *id;
      boost::json::object out;
      out["id"] = run_id;
      out["status"] = "pending";
      out["url"] = std::string(kRuns) + "/" + run_id;
      res = json_response(http::status::created, boost::json::serialize(out));
      res.set(http::field::location, std::string(kRuns) + "/" + run_id);
    });
    // A refused launch (stopping) leaves the run pending: the next start resumes it.
    if (!run_id.empty()) launch(run_id);
    ex.response = std::move(res);
    co_return;
  }
  if (target.rfind(std::string(kRuns) + "/", 0) == 0) {
    std::string_view rest = target.substr(kRuns.size() + 1);
    constexpr std::string_view kCancel = "/cancel";
    const bool cancel =
        rest.size() > kCancel.size() && rest.substr(rest.size() - kCancel.size()) == kCancel;
    std::string id(cancel ? rest.substr(0, rest.size() - kCancel.size()) : rest);
    if (id.empty() || id.find('/') != std::string::npos) {
      ex.response =
          error_response(http::status::not_found, "no such endpoint: " + std::string(target),
                         "invalid_request_error", "not_found");
      co_return;
    }
    if (cancel && method != http::verb::post) {
      ex.response = method_not_allowed("use POST");
      co_return;
    }
    if (!cancel && method != http::verb::get) {
      ex.response = method_not_allowed("use GET");
      co_return;
    }
    auto unknown = [&id] {
      return error_response(http::status::not_found, "no workflow run '" + id + "'",
                            "invalid_request_error", "unknown_run");
    };
    Response res;
    co_await on_pool([&] {
      // Another client's run answers exactly as a run that does not exist.
      auto run = engine_->get_run(id);
      if (!run.ok()) {
        res = run.status().code() == StatusCode::kNotFound
                  ? unknown()
                  : error_response(http::status::internal_server_error, run.status().message(),
                                   "server_error", "store_error");
        return;
      }
      if (!caller.admin && run->run.client != caller.client) {
        res = unknown();
        return;
      }
      if (cancel) {
        Status st = engine_->request_cancel(id);
        if (st.ok()) {
          res = json_response(http::status::accepted,
                              "{\"id\":" + json::quote(id) + ",\"cancel_requested\":true}");
        } else if (st.code() == StatusCode::kNotFound) {
          res = unknown();
        } else if (st.code() == StatusCode::kFailedPrecondition) {
          res = error_response(http::status::conflict, st.message(), "invalid_request_error",
                               "run_finished");
        } else {
          res = error_response(http::status::internal_server_error, st.message(), "server_error",
                               "store_error");
        }
        return;
      }
      std::string body = wf::format_run(*run, true);
      while (!body.empty() && body.back() == '\n') body.pop_back();
      res = json_response(http::status::ok, std::move(body));
    });
    ex.response = std::move(res);
    co_return;
  }
  ex.response = error_response(http::status::not_found, "no such endpoint: " + std::string(target),
                               "invalid_request_error", "not_found");
}

}  // namespace switchboard::gateway
