// ThreadSanitizer and the prebuilt CAF library, in ThreadSanitizer builds
// only (KVACTOR_SANITIZE=thread links this into every program that uses
// kvactor_actors).
//
// Debian's libcaf_core is not instrumented, so TSan cannot see that
// enqueueing a message into an actor's mailbox happens before the actor
// handles it, nor that dropping the last reference to a message or an actor
// happens after every other use: it reports each message handoff as a data
// race (1712 reports in engine_test alone). These definitions take the
// place of the library's functions that make those handoffs (the program's
// symbols come before the library's), tell TSan about the ordering they
// carry (release on the sending side, acquire on the receiving side, on the
// actor's or the object's address, as an instrumented CAF would), and call
// the library's own function; the reference counts' releases do the
// library's few lines themselves (see "last references"). Real races
// between actors, or between an actor and another thread, remain visible.
//
// Each function keeps the library's symbol and calling convention: `this`
// comes first; a by-value mailbox_element_ptr is passed by address; a
// returned one through the hidden result pointer that precedes `this`.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <caf/actor_control_block.hpp>
#include <caf/ref_counted.hpp>
#include <caf/scheduled_actor.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>

// The symbols below, the resumable offset and the last-reference functions'
// bodies are CAF 0.17.6's; another version needs them checked again.
static_assert(CAF_VERSION == 1706, "tsan_caf_bridge.cpp is written against CAF 0.17.6");

namespace {

// The library's definition of `symbol`, found past this program's.
void* next(const char* symbol) {
  void* f = ::dlsym(RTLD_NEXT, symbol);
  if (!f) {
    std::fprintf(stderr, "tsan_caf_bridge: %s not found in libcaf_core\n", symbol);
    std::abort();
  }
  return f;
}

} // namespace

// -- messages into a mailbox ---------------------------------------------------------

#define SCHEDULED_ENQUEUE "_ZN3caf15scheduled_actor7enqueueESt10unique_ptrINS_15mailbox_elementENS_6detail8disposerEEPNS_14execution_unitE"
#define BLOCKING_ENQUEUE "_ZN3caf14blocking_actor7enqueueESt10unique_ptrINS_15mailbox_elementENS_6detail8disposerEEPNS_14execution_unitE"
#define SCHEDULED_LAUNCH "_ZN3caf15scheduled_actor6launchEPNS_14execution_unitEbb"
#define BLOCKING_LAUNCH "_ZN3caf14blocking_actor6launchEPNS_14execution_unitEbb"
#define SCHEDULED_RESUME "_ZN3caf15scheduled_actor6resumeEPNS_14execution_unitEm"
// Worker threads resume an actor through its resumable base, 160 bytes into
// a scheduled_actor in CAF 0.17.6. The offset is part of the symbol: with
// another layout this hook goes unused and the reports it removes come
// back, failing the stage rather than hiding anything.
#define SCHEDULED_RESUME_THUNK "_ZThn160_N3caf15scheduled_actor6resumeEPNS_14execution_unitEm"
constexpr long resumable_offset = 160;
#define SCHEDULED_CONSUME "_ZN3caf15scheduled_actor7consumeERNS_15mailbox_elementE"
#define BLOCKING_DEQUEUE "_ZN3caf14blocking_actor7dequeueEv"
#define BLOCKING_AWAIT "_ZN3caf14blocking_actor10await_dataEv"
#define BLOCKING_AWAIT_UNTIL "_ZN3caf14blocking_actor10await_dataENSt6chrono10time_pointINS1_3_V212system_clockENS1_8durationIlSt5ratioILl1ELl1000000000EEEEEE"
#define SCHEDULED_CLEANUP "_ZN3caf15scheduled_actor7cleanupEONS_5errorEPNS_14execution_unitE"
#define BLOCKING_CLEANUP "_ZN3caf14blocking_actor7cleanupEONS_5errorEPNS_14execution_unitE"
#define REF_COUNTED_DEREF "_ZNK3caf11ref_counted5derefEv"
#define ACTOR_RELEASE "_ZN3caf21intrusive_ptr_releaseEPNS_19actor_control_blockE"
#define ACTOR_RELEASE_WEAK "_ZN3caf26intrusive_ptr_release_weakEPNS_19actor_control_blockE"

// Sending: a message, or the actor itself to a scheduler thread.
void scheduled_enqueue(void* self, void* element, void* unit) __asm__(SCHEDULED_ENQUEUE);
void scheduled_enqueue(void* self, void* element, void* unit) {
  __tsan_release(self);
  static const auto original = reinterpret_cast<decltype(&scheduled_enqueue)>(next(SCHEDULED_ENQUEUE));
  original(self, element, unit);
}

void blocking_enqueue(void* self, void* element, void* unit) __asm__(BLOCKING_ENQUEUE);
void blocking_enqueue(void* self, void* element, void* unit) {
  __tsan_release(self);
  static const auto original = reinterpret_cast<decltype(&blocking_enqueue)>(next(BLOCKING_ENQUEUE));
  original(self, element, unit);
}

void scheduled_launch(void* self, void* unit, bool lazy, bool hide) __asm__(SCHEDULED_LAUNCH);
void scheduled_launch(void* self, void* unit, bool lazy, bool hide) {
  __tsan_release(self);
  static const auto original = reinterpret_cast<decltype(&scheduled_launch)>(next(SCHEDULED_LAUNCH));
  original(self, unit, lazy, hide);
}

void blocking_launch(void* self, void* unit, bool lazy, bool hide) __asm__(BLOCKING_LAUNCH);
void blocking_launch(void* self, void* unit, bool lazy, bool hide) {
  __tsan_release(self);
  static const auto original = reinterpret_cast<decltype(&blocking_launch)>(next(BLOCKING_LAUNCH));
  original(self, unit, lazy, hide);
}

// Receiving: a scheduler thread runs the actor (and, done, hands its state
// on to whichever thread runs it next), handles one message, or a blocking
// actor takes one.
int scheduled_resume(void* self, void* unit, unsigned long max_throughput) __asm__(SCHEDULED_RESUME);
int scheduled_resume(void* self, void* unit, unsigned long max_throughput) {
  __tsan_acquire(self);
  static const auto original = reinterpret_cast<decltype(&scheduled_resume)>(next(SCHEDULED_RESUME));
  const int r = original(self, unit, max_throughput);
  __tsan_release(self); // for the thread that runs it next
  return r;
}

int scheduled_resume_thunk(void* resumable, void* unit, unsigned long max_throughput) __asm__(SCHEDULED_RESUME_THUNK);
int scheduled_resume_thunk(void* resumable, void* unit, unsigned long max_throughput) {
  void* self = static_cast<char*>(resumable) - resumable_offset;
  __tsan_acquire(self);
  static const auto original =
      reinterpret_cast<decltype(&scheduled_resume_thunk)>(next(SCHEDULED_RESUME_THUNK));
  const int r = original(resumable, unit, max_throughput);
  __tsan_release(self); // for the thread that runs it next
  return r;
}

// NOTE: released after each message as well, not only when resume()
// returns: once the last message is handled, resume() blocks the mailbox,
// and a message enqueued right then starts the actor on another thread
// while this one is still inside resume().
int scheduled_consume(void* self, void* element) __asm__(SCHEDULED_CONSUME);
int scheduled_consume(void* self, void* element) {
  __tsan_acquire(self);
  static const auto original = reinterpret_cast<decltype(&scheduled_consume)>(next(SCHEDULED_CONSUME));
  const int r = original(self, element);
  __tsan_release(self);
  return r;
}

void* blocking_dequeue(void* result, void* self) __asm__(BLOCKING_DEQUEUE);
void* blocking_dequeue(void* result, void* self) {
  static const auto original = reinterpret_cast<decltype(&blocking_dequeue)>(next(BLOCKING_DEQUEUE));
  void* r = original(result, self);
  __tsan_acquire(self);
  return r;
}

void blocking_await(void* self) __asm__(BLOCKING_AWAIT);
void blocking_await(void* self) {
  static const auto original = reinterpret_cast<decltype(&blocking_await)>(next(BLOCKING_AWAIT));
  original(self);
  __tsan_acquire(self);
}

bool blocking_await_until(void* self, long until) __asm__(BLOCKING_AWAIT_UNTIL);
bool blocking_await_until(void* self, long until) {
  static const auto original = reinterpret_cast<decltype(&blocking_await_until)>(next(BLOCKING_AWAIT_UNTIL));
  const bool r = original(self, until);
  __tsan_acquire(self);
  return r;
}

// An actor ending drops the messages still in its mailbox.
bool scheduled_cleanup(void* self, void* reason, void* unit) __asm__(SCHEDULED_CLEANUP);
bool scheduled_cleanup(void* self, void* reason, void* unit) {
  __tsan_acquire(self);
  static const auto original = reinterpret_cast<decltype(&scheduled_cleanup)>(next(SCHEDULED_CLEANUP));
  return original(self, reason, unit);
}

bool blocking_cleanup(void* self, void* reason, void* unit) __asm__(BLOCKING_CLEANUP);
bool blocking_cleanup(void* self, void* reason, void* unit) {
  __tsan_acquire(self);
  static const auto original = reinterpret_cast<decltype(&blocking_cleanup)>(next(BLOCKING_CLEANUP));
  return original(self, reason, unit);
}

// -- last references ------------------------------------------------------------------
// Each drop releases; the thread that turns out to be last acquires what
// every drop before it released, and only after its own decrement: one that
// acquired before would miss a drop another thread made in between, and
// report that thread's last uses as races with the delete. So these take
// the library's place whole, as CAF 0.17.6 defines them.

// ref_counted's count and deletion are protected; member pointers named
// through a derived class reach them in any ref_counted.
struct ref_counted_access : caf::ref_counted {
  static constexpr auto count = &ref_counted_access::rc_;
  static constexpr auto request_deletion = &ref_counted_access::request_deletion;
};

// `this` is const in the library's signature; the count is mutable.
void ref_counted_deref(caf::ref_counted* self) __asm__(REF_COUNTED_DEREF);
void ref_counted_deref(caf::ref_counted* self) {
  __tsan_release(self);
  auto& count = self->*ref_counted_access::count;
  if (count == 1) {
    __tsan_acquire(self);
    (self->*ref_counted_access::request_deletion)(false);
  } else if (count.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    __tsan_acquire(self);
    (self->*ref_counted_access::request_deletion)(true);
  }
}

// An actor's control block counts strong references (the last one destroys
// the actor) and weak ones (the last frees the block).
void actor_release_weak(caf::actor_control_block* x) __asm__(ACTOR_RELEASE_WEAK);
void actor_release_weak(caf::actor_control_block* x) {
  __tsan_release(x);
  if (x->weak_refs == 1 || x->weak_refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    __tsan_acquire(x);
    x->block_dtor(x);
  }
}

void actor_release(caf::actor_control_block* x) __asm__(ACTOR_RELEASE);
void actor_release(caf::actor_control_block* x) {
  __tsan_release(x);
  if (x->strong_refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    __tsan_acquire(x);
    // What its messages released on the actor's own address comes first too.
    __tsan_acquire(x->get());
    x->data_dtor(x->get());
    actor_release_weak(x);
  }
}
