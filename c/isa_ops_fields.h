/* isa_ops_fields.h — included inside a kernels_<isa>.c file's loop_isa_kernels initializer: one
 * `.op = ISA_FN(op),` per op of ops.def (no include guard: it is meant to be expanded in place). */
#define OP(name, params, args, stat, flops, bytes) .name = ISA_FN(name),
#define OP_RETURNING(type, name, params, args, stat, flops, bytes) .name = ISA_FN(name),
#include "ops.def"
