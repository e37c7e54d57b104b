/*
 * The pod sandbox's process for the test node's own pause image (no image can be pulled
 * here, so containerd's `sandbox_image` is built from this file by scripts/images.sh).
 *
 * It holds the pod's namespaces open, reaps zombies when the pod shares its PID namespace,
 * and exits on SIGINT/SIGTERM. Written from scratch for podtrace; the same job as the
 * Kubernetes pause container.
 */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { _exit(sig == SIGTERM || sig == SIGINT ? 0 : 1); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction on_stop = {.sa_handler = stop};
  struct sigaction on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
  if (getpid() != 1) {
    write(2, "pause: should be PID 1 of its container\n", 40);
  }
  if (sigaction(SIGINT, &on_stop, NULL) < 0 || sigaction(SIGTERM, &on_stop, NULL) < 0 ||
      sigaction(SIGCHLD, &on_child, NULL) < 0) {
    return 1;
  }
  for (;;) {
    pause();
  }
}
