#include <oneapi/dnnl/dnnl.h>

/// oneDNN runs on OpenMP threads (Debian builds it with libgomp); omp.h is not
/// on clang's include path, so the one function we need is declared here.
extern void omp_set_num_threads(int);

/// DNNL_MEMORY_ALLOCATE is a cast macro Swift cannot import.
static inline void *ct_dnnl_memory_allocate(void) { return DNNL_MEMORY_ALLOCATE; }
