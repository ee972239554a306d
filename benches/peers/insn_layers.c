/* QEMU TCG plugin (API v1, QEMU 7.2) for qemu_layers.sh: guest instructions per function
 * symbol and per engine layer. Debian's qemu-user 7.2 ships no plugin headers, so the few
 * API declarations used are written out here (as in ../shared/tools/qemu-insn/insn_count.c).
 *
 *   qemu-aarch64 -plugin ./libinsn_layers.so[,arg=top=60] -d plugin -D log.txt ./prog
 *
 * Log lines:
 *   total_insns N
 *   mark T         one per clock_gettime system call, T = instructions executed so far
 *   sym N NAME     the top symbols by executed instructions (NAME mangled; demangle after)
 *   pc ADDR N      with pcs=K: the K most executed instruction addresses (guest, hex)
 *
 * Layers: `facegate bench --profile` reads the clock before and after each layer (Instant,
 * which is the clock_gettime system call under qemu-user 7.2: it maps no vDSO), so the
 * difference of the two marks around a layer is that layer's instruction count; the script
 * pairs them with the layer list the profile prints. Symbols come from the ELF symbol table
 * QEMU loaded (release builds keep it), so inlined code counts in its caller. */
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb; struct qemu_plugin_insn; typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t, void *);
typedef void (*qemu_plugin_vcpu_syscall_cb_t)(qemu_plugin_id_t, unsigned int, int64_t, uint64_t,
                                              uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                                              uint64_t, uint64_t);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, qemu_plugin_vcpu_tb_trans_cb_t);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
const char *qemu_plugin_insn_symbol(const struct qemu_plugin_insn *);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, enum qemu_plugin_op, void *, uint64_t);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *, enum qemu_plugin_op, void *, uint64_t);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t, qemu_plugin_vcpu_syscall_cb_t);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, qemu_plugin_udata_cb_t, void *);
void qemu_plugin_outs(const char *);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

#define NSLOT 65536
#define SYS_CLOCK_GETTIME 113 /* aarch64 Linux */
static const char *names[NSLOT]; static uint64_t counts[NSLOT]; static uint64_t total; static int top = 60;
/* pcs=N: also the N most executed instruction addresses (to read beside objdump -d) */
#define NPC (1 << 20)
static uint64_t pc_addr[NPC], pc_count[NPC]; static int pcs;

static uint64_t *pc_slot(uint64_t a) {
    for (size_t i = (a >> 2) % NPC, tries = 0;; i = (i + 1) % NPC, tries++) {
        if (tries >= NPC) { static uint64_t overflow; return &overflow; }
        if (!pc_addr[i]) { pc_addr[i] = a; return &pc_count[i]; }
        if (pc_addr[i] == a) return &pc_count[i];
    }
}

/* one counter per symbol name (open addressing on a string hash) */
static uint64_t *slot_for(const char *sym) {
    uint64_t h = 1469598103934665603ull;
    for (const char *p = sym; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    for (size_t i = h % NSLOT, tries = 0;; i = (i + 1) % NSLOT, tries++) {
        if (tries >= NSLOT) { static uint64_t overflow; return &overflow; }
        if (!names[i]) { names[i] = strdup(sym); return &counts[i]; }
        if (!strcmp(names[i], sym)) return &counts[i];
    }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &total, n);
    /* one counter per run of instructions of the same symbol (a block is usually one) */
    for (size_t i = 0; i < n;) {
        const char *s = qemu_plugin_insn_symbol(qemu_plugin_tb_get_insn(tb, i));
        size_t j = i + 1;
        while (j < n && qemu_plugin_insn_symbol(qemu_plugin_tb_get_insn(tb, j)) == s) j++;
        qemu_plugin_register_vcpu_insn_exec_inline(qemu_plugin_tb_get_insn(tb, i),
                                                   QEMU_PLUGIN_INLINE_ADD_U64,
                                                   slot_for(s ? s : "?"), j - i);
        i = j;
    }
    for (size_t i = 0; pcs && i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                   pc_slot(qemu_plugin_insn_vaddr(insn)), 1);
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8) {
    if (num != SYS_CLOCK_GETTIME) return;
    char buf[64];
    snprintf(buf, sizeof buf, "mark %llu\n", (unsigned long long)total);
    qemu_plugin_outs(buf);
}

static int cmp_pc(const void *a, const void *b) {
    uint64_t x = pc_count[*(const int *)a], y = pc_count[*(const int *)b];
    return x < y ? 1 : x > y ? -1 : 0;
}

static int cmp(const void *a, const void *b) {
    uint64_t x = counts[*(const int *)a], y = counts[*(const int *)b];
    return x < y ? 1 : x > y ? -1 : 0;
}

static void at_exit(qemu_plugin_id_t id, void *p) {
    static int idx[NSLOT]; int m = 0;
    for (int i = 0; i < NSLOT; i++) if (names[i]) idx[m++] = i;
    qsort(idx, m, sizeof(int), cmp);
    char buf[1024];
    snprintf(buf, sizeof buf, "total_insns %llu\n", (unsigned long long)total); qemu_plugin_outs(buf);
    for (int k = 0; k < m && k < top; k++) {
        snprintf(buf, sizeof buf, "sym %llu %s\n", (unsigned long long)counts[idx[k]], names[idx[k]]);
        qemu_plugin_outs(buf);
    }
    if (!pcs) return;
    static int pidx[NPC]; m = 0;
    for (int i = 0; i < NPC; i++) if (pc_addr[i]) pidx[m++] = i;
    qsort(pidx, m, sizeof(int), cmp_pc);
    for (int k = 0; k < m && k < pcs; k++) {
        snprintf(buf, sizeof buf, "pc %llx %llu\n", (unsigned long long)pc_addr[pidx[k]],
                 (unsigned long long)pc_count[pidx[k]]);
        qemu_plugin_outs(buf);
    }
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    for (int i = 0; i < argc; i++) if (!strncmp(argv[i], "top=", 4)) top = atoi(argv[i] + 4);
        else if (!strncmp(argv[i], "pcs=", 4)) pcs = atoi(argv[i] + 4);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
