/*
 * A small test harness for the C tests: each test is a function, each
 * check inside it prints what failed, and main() ends with the line
 * "N passed, M failed" (tests, not checks) and a non-zero exit status on
 * any failure. A test that cannot run on this host calls SKIP().
 */
#ifndef CHECK_H
#define CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_tests_passed, check_tests_failed, check_tests_skipped;
static int check_current_failed, check_current_skipped;

/* Fails the current test (and goes on) when `cond` is false. */
#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            printf("  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
            check_current_failed = 1;                                            \
        }                                                                        \
    } while (0)

/* Compares two integers, printing both on failure. */
#define CHECK_EQ(actual, expected)                                               \
    do {                                                                         \
        long long check_a_ = (long long)(actual);                                \
        long long check_e_ = (long long)(expected);                              \
        if (check_a_ != check_e_) {                                              \
            printf("  %s:%d: %s == %lld (0x%llx), expected %s == %lld (0x%llx)\n", \
                   __FILE__, __LINE__, #actual, check_a_,                        \
                   (unsigned long long)check_a_, #expected, check_e_,            \
                   (unsigned long long)check_e_);                                \
            check_current_failed = 1;                                            \
        }                                                                        \
    } while (0)

/* Like CHECK, but ends the test at once (for setup that later checks need). */
#define REQUIRE(cond)                                                            \
    do {                                                                         \
        if (!(cond)) {                                                           \
            printf("  %s:%d: required: %s\n", __FILE__, __LINE__, #cond);        \
            check_current_failed = 1;                                            \
            return;                                                              \
        }                                                                        \
    } while (0)

/* Ends the test as skipped, with the reason the host cannot run it. */
#define SKIP(reason)                                                             \
    do {                                                                         \
        printf("  skipped: %s\n", reason);                                       \
        check_current_skipped = 1;                                               \
        return;                                                                  \
    } while (0)

/* Runs one test function. */
#define RUN(test)                                                                \
    do {                                                                         \
        check_current_failed = 0;                                                \
        check_current_skipped = 0;                                               \
        fflush(stdout);                                                          \
        test();                                                                  \
        if (check_current_failed) {                                              \
            check_tests_failed++;                                                \
            printf("FAIL %s\n", #test);                                          \
        } else if (check_current_skipped) {                                      \
            check_tests_skipped++;                                               \
            printf("skip %s\n", #test);                                          \
        } else {                                                                 \
            check_tests_passed++;                                                \
            printf("ok   %s\n", #test);                                          \
        }                                                                        \
        fflush(stdout);                                                          \
    } while (0)

#if defined(_POSIX_C_SOURCE)
#include <unistd.h>
/* Kills the test program if it hangs (a guest that never exits). */
static inline void check_set_timeout(unsigned seconds)
{
    alarm(seconds);
}
#endif

/* Prints the summary line and returns the exit status for main(). */
static inline int check_summary(void)
{
    if (check_tests_skipped)
        printf("(%d skipped)\n", check_tests_skipped);
    printf("%d passed, %d failed\n", check_tests_passed, check_tests_failed);
    return check_tests_failed ? 1 : 0;
}

#endif
