/* PHY_ASSERT: invariants that only a programming error can break, checked and fatal.
 *
 * PHY_ASSERT(cond) is for what the code itself guarantees: an argument no caller
 * passes NULL, an enum value outside its enum, a state-machine state that cannot
 * occur, a buffer size the caller sized. When cond is false, one log line goes to
 * stderr through phy_log:
 *
 *   ... level=error prog=phyhub event=assert_failed where=hub/store/core.c:54
 *   func=argsv expr="i < ARGS_MAX"
 *
 * and the process aborts (SIGABRT, a core dump where enabled). Never use it for
 * anything that bytes from outside can reach: network input, files, flags, database
 * contents, a peer's behaviour. Those keep returning PHY_E* errors; an assertion
 * there would be a remote crash.
 *
 * Builds. PHY_ASSERTS is defined (CMake option PHY_ASSERTS, ON by default in every
 * build type; Debug, sanitizer and fuzz builds refuse to turn it off), so release
 * builds keep the checks too. That is deliberate: each check is a compare and a
 * branch on a path that used to return an error, and a daemon that carries on with
 * a broken invariant (a store transaction open twice, a connection in no state)
 * corrupts or stalls quietly, where an abort is logged, restarted by systemd
 * (Restart=on-failure) and fixed. Configuring -DPHY_ASSERTS=OFF compiles the checks
 * out: cond is not evaluated (so it must have no side effects) and a violated
 * invariant runs on into undefined behaviour, because the converted sites no longer
 * return an error. It exists to measure what the checks cost, not to ship. */
#ifndef PHY_ASSERT_H
#define PHY_ASSERT_H

#if defined(PHY_ASSERTS) && PHY_ASSERTS
#define PHY_ASSERT(cond) ((cond) ? (void)0 : phy_assert_fail(#cond, __FILE__, __LINE__, __func__))
#else
#define PHY_ASSERT(cond) ((void)sizeof(!(cond)))
#endif

/* Logs "assert_failed" with where=file:line, func and expr (all borrowed, static),
 * then abort()s. Called by PHY_ASSERT only. */
_Noreturn void phy_assert_fail(const char *expr, const char *file, int line, const char *func)
    __attribute__((cold));

#endif
