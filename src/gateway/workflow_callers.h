// What workflow `http` and `llm` steps (and `feedback:` verdicts) use to reach the network and
// the gateway, for both `switchboard serve` (the gateway's own workflow API) and the
// `switchboard workflow` CLI (an in-process gateway). Kept in the gateway module so that the
// workflow library stays free of Asio and Beast.
//
// Thread-safety: every function and method may be called from any thread concurrently (parallel
// workflow branches do).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "workflow/workflow.h"

namespace switchboard::gateway {

// One blocking request on its own short-lived io_context, driven in 20 ms slices so that the
// step's interrupt (timeout, cancellation, shutdown) abandons it promptly. Response headers are
// returned with the reply.
Result<workflow::HttpReply> blocking_fetch(const workflow::HttpCall& call,
                                           const workflow::Interrupt& interrupt,
                                           bool public_only = false);
std::shared_ptr<workflow::HttpCaller> make_blocking_http_caller(
    std::function<std::vector<std::string>()> http_allow = {});

// The exec executor with the policy of runs submitted over HTTP: a step of a run whose client
// is not the local user ("") fails unless `allow_exec()` (workflows.allow_exec). The policy
// follows the run, whoever executes it (`serve`, or `workflow resume` on the CLI).
std::shared_ptr<workflow::StepExecutor> make_gated_exec_executor(std::function<bool()> allow_exec);

// The `workflows:` bounds every executor applies, `serve` and the CLI alike: the lease (renewed
// three times a lease), max_parallel and the run budget ceiling.
void apply_workflow_bounds(const WorkflowsConfig& w, workflow::EngineOptions& opts);

// Where a gateway answers: "http://host:port" (no trailing slash) and the gateway key to send
// ("" = none, for gateways without auth.gateway_keys).
struct GatewayTarget {
  std::string base_url;
  std::string gateway_key;
};
// Resolves the target for the steps of a run of `client` (workflow.h: "" is the local user,
// "key:<name>" a gateway key, "admin", "anonymous"): a run's llm steps and verdicts go out with
// the key that created the run, so its routes, rpm and budget apply to them.
using TargetResolver = std::function<Result<GatewayTarget>(const std::string& client)>;

// Sends llm steps' chat completions to POST {base}/v1/chat/completions and verdicts to
// POST {base}/v1/feedback, through the gateway's real request path (routing, key rotation,
// failover, request-id memory). `resolve` is called at each request, so the target may be
// created lazily (the CLI starts its in-process gateway at the first llm step) and follows a
// reload of the gateway keys.
// The http caller of runs submitted over HTTP (`HttpCall::client` not empty) reaches only public
// addresses, besides URLs under `http_allow`; the local user's runs reach anything.
class GatewayStepClient final : public workflow::LlmCaller, public workflow::FeedbackSender {
 public:
  explicit GatewayStepClient(TargetResolver resolve) : resolve_(std::move(resolve)) {}

  Result<workflow::HttpReply> complete(
      const std::string& client, const std::string& body,
      const std::vector<std::pair<std::string, std::string>>& headers, int64_t timeout_ms,
      const workflow::Interrupt& interrupt) override;
  // 200 is delivered; 409 (a verdict already recorded, e.g. sent again after a retry) counts as
  // delivered too; anything else is an error carrying the gateway's message.
  Status send(const workflow::FeedbackCall& call, const workflow::Interrupt& interrupt) override;

 private:
  TargetResolver resolve_;
};

}  // namespace switchboard::gateway
