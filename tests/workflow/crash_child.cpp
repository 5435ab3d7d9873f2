// Crash-test helper: runs (or resumes) workflow run argv[2] in the database argv[1]. The parent
// kill -9s it at random moments. Exit 0 when the run completed.
#include <cstdio>

#include "workflow/workflow.h"

using namespace switchboard;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: workflow_crash_child DB RUN_ID\n");
    return 2;
  }
  workflow::EngineOptions o;
  o.db_path = argv[1];
  // The same owner id on every restart: a restarted executor takes its own run back at once.
  o.owner = "crash-child";
  auto engine = workflow::Engine::open(o);
  if (!engine.ok()) {
    std::fprintf(stderr, "open: %s\n", engine.status().to_string().c_str());
    return 3;
  }
  auto r = (*engine)->run(argv[2]);
  if (!r.ok()) {
    std::fprintf(stderr, "run: %s\n", r.status().to_string().c_str());
    return 4;
  }
  return r->status == workflow::RunStatus::kCompleted ? 0 : 1;
}
