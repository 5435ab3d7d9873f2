// `switchboard workflow run|resume|cancel|list|show` (DESIGN.md "Workflows").
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace switchboard::cli {

struct WorkflowArgs {
  std::string file;
  std::string input = "{}";
  std::string db;
  std::string config;
  std::string run_id;
  bool json = false;
  bool force = false;
  bool wait = false;  // resume: wait for the executor that owns the run instead of refusing
  CLI::App* run = nullptr;
  CLI::App* resume = nullptr;
  CLI::App* cancel = nullptr;
  CLI::App* list = nullptr;
  CLI::App* show = nullptr;
};

// Registers the subcommands and their flags on the `workflow` group.
void add_workflow_commands(CLI::App* workflow, WorkflowArgs& args);
// Runs the chosen subcommand; returns the exit code (0 ok, 1 run failed, 2 bad usage).
int run_workflow_command(const WorkflowArgs& args);

}  // namespace switchboard::cli
