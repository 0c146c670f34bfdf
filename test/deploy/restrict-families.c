/*
 * restrict-families FAMILIES COMMAND [ARG...]: runs COMMAND with socket() refused (EAFNOSUPPORT) for
 * every address family not in FAMILIES (comma-separated numbers), as systemd's
 * RestrictAddressFamilies= does, through a seccomp filter. For test/deploy/address-families.test.ts;
 * x86-64 and arm64, where socket() is a system call of its own.
 */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_FAMILIES 16

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s FAMILIES COMMAND [ARG...]\n", argv[0]);
    return 2;
  }
  unsigned families[MAX_FAMILIES];
  int n = 0;
  for (char *p = strtok(argv[1], ","); p != NULL; p = strtok(NULL, ",")) {
    if (n == MAX_FAMILIES) return 2;
    families[n++] = (unsigned)strtoul(p, NULL, 10);
  }
  /* Load the call's number; not socket(): allow. Load its family; one listed: allow; else refuse. */
  struct sock_filter f[4 + MAX_FAMILIES + 2];
  int k = 0;
  f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
  f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 1, 0);
  f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]));
  for (int i = 0; i < n; i++) {
    /* Equal: jump over the rest of the list and the refusal, to the allow. */
    f[k] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, families[i], (unsigned char)(n - i), 0);
    k++;
  }
  f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAFNOSUPPORT);
  f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  struct sock_fprog prog = {(unsigned short)k, f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
    perror("seccomp");
    return 2;
  }
  execvp(argv[2], argv + 2);
  perror("exec");
  return 2;
}
