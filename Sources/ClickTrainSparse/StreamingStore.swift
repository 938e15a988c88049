#if AVX512 && arch(x86_64)
import _Builtin_intrinsics.intel
#endif
import Synchronization

/// Whether `streamStore` writes around the caches (AVX-512 x86 builds) or is a plain store.
let hasStreamingStores: Bool = {
    #if AVX512 && arch(x86_64)
    return true
    #else
    return false
    #endif
}()

/// Stores 16 floats at `p` (64-byte aligned) without reading the line first: a non-temporal
/// store (`vmovntps`, from the compiler's own intrinsics module) on AVX-512 x86 builds, a
/// plain store elsewhere. A thread that streamed calls `streamFence()` before others read.
@inline(__always)
func streamStore(_ v: SIMD16<Float>, _ p: UnsafeMutableRawPointer) {
    #if AVX512 && arch(x86_64)
    _mm512_stream_ps(p, v)
    #else
    p.storeBytes(of: v, as: SIMD16<Float>.self)
    #endif
}

@inline(__always)
func streamStore(_ v: SIMD32<Float>, _ p: UnsafeMutableRawPointer) {
    streamStore(v.lowHalf, p)
    streamStore(v.highHalf, p + 64)
}

/// Orders this thread's streamed stores before its later stores (a locked instruction,
/// which also drains the write-combining buffers).
@inline(__always)
func streamFence() {
    atomicMemoryFence(ordering: .sequentiallyConsistent)
}
