import ClickTrainCore
import Foundation

/// One argument of a kernel launch, as the kernel declares it.
enum KernelArg {
    case ptr(DevicePointer)
    case i32(Int32)
    case i64(Int64)
    case f32(Float)

    static func int(_ v: Int) -> KernelArg { .i32(Int32(v)) }
    static func long(_ v: Int) -> KernelArg { .i64(Int64(v)) }
    static let null = KernelArg.ptr(0)
}

/// A block of GPU memory, freed with its owner.
final class DeviceBuffer {
    let device: CUDADevice
    let pointer: DevicePointer
    /// Floats (or 4-byte words) it holds.
    let count: Int

    init(_ device: CUDADevice, count: Int) throws {
        self.device = device
        self.count = count
        var p: DevicePointer = 0
        try device.driver.check(device.driver.cuMemAlloc(&p, max(count, 1) * 4), "cuMemAlloc(\(count * 4) bytes)")
        pointer = p
    }

    deinit {
        _ = device.driver.cuCtxSetCurrent(device.context)
        _ = device.driver.cuMemFree(pointer)
    }

    /// The address `floats` elements in.
    func at(_ floats: Int) -> DevicePointer { pointer + DevicePointer(floats * 4) }
}

/// The GPU, its stream, and the libraries and kernels a run uses: `libcuda.so.1`, NVRTC,
/// cuBLAS and cuDNN are loaded at run time; the kernels are compiled by NVRTC for this GPU
/// when the device opens.
public final class CUDADevice: @unchecked Sendable {
    let driverLibrary: SharedLibrary
    let driver: DriverAPI
    let nvrtc: NVRTC
    let cublas: CuBLASAPI
    let cudnn: CuDNNAPI
    let context: OpaquePointer?
    let stream: OpaquePointer?
    let cublasHandle: OpaquePointer?
    let cudnnHandle: OpaquePointer?
    private var functions: [String: OpaquePointer?] = [:]
    /// "NVIDIA H100 80GB HBM3, sm_90".
    public let name: String
    /// `sm_90`.
    public let architecture: String

    /// Opens GPU 0: throws `CUDAUnavailable` naming the first library missing.
    public init() throws {
        driverLibrary = try SharedLibrary("the NVIDIA driver", names: ["libcuda.so.1", "libcuda.so"])
        driver = try DriverAPI(driverLibrary)
        var version: Int32 = 0
        let driverMajor = driver.cuDriverGetVersion(&version) == 0 ? Int(version) / 1000 : nil
        nvrtc = try NVRTC(preferMajor: driverMajor)
        cublas = try CuBLASAPI(SharedLibrary("cuBLAS", names: candidates(versioned("libcublas.so", driverMajor))))
        cudnn = try CuDNNAPI(SharedLibrary("cuDNN", names: candidates(["libcudnn.so.9", "libcudnn.so"])))
        try driver.check(driver.cuInit(0), "cuInit")
        var count: Int32 = 0
        try driver.check(driver.cuDeviceGetCount(&count), "cuDeviceGetCount")
        guard count > 0 else { throw CUDAUnavailable(library: "a GPU", detail: "the driver sees no CUDA device") }
        var dev: Int32 = 0
        try driver.check(driver.cuDeviceGet(&dev, 0), "cuDeviceGet")
        var major: Int32 = 0, minor: Int32 = 0
        try driver.check(driver.cuDeviceGetAttribute(&major, 75, dev), "cuDeviceGetAttribute(major)")
        try driver.check(driver.cuDeviceGetAttribute(&minor, 76, dev), "cuDeviceGetAttribute(minor)")
        architecture = "sm_\(major)\(minor)"
        var nameBytes = [CChar](repeating: 0, count: 256)
        _ = driver.cuDeviceGetName(&nameBytes, 255, dev)
        name = String(decoding: nameBytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            + ", \(architecture)"
        var ctx: OpaquePointer?
        try driver.check(driver.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain")
        context = ctx
        try driver.check(driver.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        var s: OpaquePointer?
        try driver.check(driver.cuStreamCreate(&s, 1), "cuStreamCreate")  // non-blocking
        stream = s
        var bh: OpaquePointer?
        try cublas.check(cublas.cublasCreate(&bh), "cublasCreate")
        try cublas.check(cublas.cublasSetStream(bh, s), "cublasSetStream")
        cublasHandle = bh
        var dh: OpaquePointer?
        try cudnn.check(cudnn.cudnnCreate(&dh), "cudnnCreate")
        try cudnn.check(cudnn.cudnnSetStream(dh, s), "cudnnSetStream")
        cudnnHandle = dh
        let image = try nvrtc.compile(KernelSource.source, name: "clicktrain_kernels.cu", arch: architecture)
        var module: OpaquePointer?
        try image.withUnsafeBytes { try driver.check(driver.cuModuleLoadData(&module, $0.baseAddress), "cuModuleLoadData") }
        for kernel in KernelSource.names {
            var f: OpaquePointer?
            try driver.check(driver.cuModuleGetFunction(&f, module, kernel), "cuModuleGetFunction(\(kernel))")
            functions[kernel] = f
        }
    }

    /// Makes this device's context current on the calling thread.
    func makeCurrent() throws { try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent") }

    /// Launches `kernel` over `total` elements (256 threads a block; at most `maxBlocks`
    /// blocks, the kernels stride over the rest).
    func launch(_ kernel: String, total: Int, maxBlocks: Int = 65_535, _ args: [KernelArg]) throws {
        let blocks = max(1, min((total + 255) / 256, maxBlocks))
        try launch(kernel, grid: (blocks, 1), block: 256, args)
    }

    func launch(_ kernel: String, grid: (Int, Int), block: Int, _ args: [KernelArg]) throws {
        guard let f = functions[kernel] else { throw CUDAError(call: "launch", message: "no kernel \(kernel)") }
        // Each argument in its own 8-byte slot; the kernel reads it through its pointer.
        let slots = UnsafeMutableRawPointer.allocate(byteCount: max(args.count, 1) * 8, alignment: 8)
        defer { slots.deallocate() }
        var pointers = [UnsafeMutableRawPointer?](repeating: nil, count: args.count)
        for (i, a) in args.enumerated() {
            let slot = slots + i * 8
            switch a {
            case .ptr(let p): slot.storeBytes(of: p, as: UInt64.self)
            case .i32(let v): slot.storeBytes(of: v, as: Int32.self)
            case .i64(let v): slot.storeBytes(of: v, as: Int64.self)
            case .f32(let v): slot.storeBytes(of: v, as: Float.self)
            }
            pointers[i] = slot
        }
        try pointers.withUnsafeMutableBufferPointer { p in
            try driver.check(driver.cuLaunchKernel(f, UInt32(grid.0), UInt32(grid.1), 1, UInt32(block), 1, 1, 0, stream,
                                                   p.baseAddress, nil), "cuLaunchKernel(\(kernel))")
        }
    }

    func zero(_ p: DevicePointer, count: Int) throws {
        try driver.check(driver.cuMemsetD32Async(p, 0, count, stream), "cuMemsetD32Async")
    }

    func upload(_ src: UnsafeRawPointer, to dst: DevicePointer, bytes: Int) throws {
        try driver.check(driver.cuMemcpyHtoDAsync(dst, src, bytes, stream), "cuMemcpyHtoDAsync")
    }

    func download(_ src: DevicePointer, to dst: UnsafeMutableRawPointer, bytes: Int) throws {
        try driver.check(driver.cuMemcpyDtoHAsync(dst, src, bytes, stream), "cuMemcpyDtoHAsync")
    }

    func copy(_ src: DevicePointer, to dst: DevicePointer, bytes: Int) throws {
        try driver.check(driver.cuMemcpyDtoDAsync(dst, src, bytes, stream), "cuMemcpyDtoDAsync")
    }

    func synchronize() throws { try driver.check(driver.cuStreamSynchronize(stream), "cuStreamSynchronize") }

    /// `t` copied to a new device buffer (synchronously).
    func buffer(from t: Tensor) throws -> DeviceBuffer {
        let b = try DeviceBuffer(self, count: t.count)
        try upload(t.data, to: b.pointer, bytes: t.count * 4)
        try synchronize()
        return b
    }

    /// A device buffer's first `count` floats as a host array (synchronously).
    func array(_ p: DevicePointer, count: Int) throws -> [Float] {
        var out = [Float](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try download(p, to: $0.baseAddress!, bytes: count * 4) }
        try synchronize()
        return out
    }
}

/// Page-locked host memory: copies from it to the GPU run asynchronously.
final class PinnedBuffer {
    let device: CUDADevice
    let pointer: UnsafeMutableRawPointer
    let bytes: Int

    init(_ device: CUDADevice, bytes: Int) throws {
        self.device = device
        self.bytes = bytes
        var p: UnsafeMutableRawPointer?
        try device.driver.check(device.driver.cuMemHostAlloc(&p, max(bytes, 4), 0), "cuMemHostAlloc(\(bytes) bytes)")
        pointer = p!
    }

    deinit { _ = device.driver.cuMemFreeHost(pointer) }
}
