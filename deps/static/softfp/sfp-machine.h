/*
 * deps/static/softfp/sfp-machine.h: what glibc's soft-fp code needs from
 * its build, outside glibc. deps/static/build.sh softfp compiles glibc's
 * soft-fp/ routines (__adddf3, __muldf3, ...) against this file.
 *
 * Why: router MIPS CPUs have no FPU and OpenWrt kernels no FPU emulator,
 * so the mips/mipsel binaries are soft-float; Debian's MIPS libgcc.a is
 * hard-float only, and its soft-fp routines take their arguments in FPU
 * registers. These are the same routines, built -msoft-float.
 */
#include <endian.h>     /* musl's: __BYTE_ORDER, which soft-fp.h needs */

#define strong_alias(name, aliasname) \
	extern __typeof(name) aliasname __attribute__((alias(#name)));

#include "mips32-sfp-machine.h"
