#include "common/thread_slot.h"

#include <mutex>
#include <vector>

namespace switchboard {
namespace {

class Slots {
 public:
  static Slots& instance() {
    static auto* s = new Slots;  // never destroyed: threads may exit after static teardown
    return *s;
  }
  uint32_t take() {
    std::lock_guard l(mu_);
    for (uint32_t i = 0; i < used_.size(); ++i) {
      if (!used_[i]) {
        used_[i] = true;
        return i;
      }
    }
    used_.push_back(true);
    return static_cast<uint32_t>(used_.size() - 1);
  }
  void give_back(uint32_t slot) {
    std::lock_guard l(mu_);
    used_[slot] = false;
  }

 private:
  std::mutex mu_;
  std::vector<bool> used_;
};

struct Holder {
  uint32_t value = Slots::instance().take();
  ~Holder() { Slots::instance().give_back(value); }
};

}  // namespace

uint32_t this_thread_slot() {
  thread_local Holder holder;
  return holder.value;
}

}  // namespace switchboard
