import Foundation

/// A library `--device cuda` needs could not be loaded (or lacks a function): one line
/// naming it.
public struct CUDAUnavailable: Error, CustomStringConvertible {
    public let library: String
    public let detail: String
    public var description: String { "--device cuda: cannot load \(library) (\(detail))" }
}

/// A CUDA, NVRTC, cuBLAS or cuDNN call failed.
public struct CUDAError: Error, CustomStringConvertible {
    public let call: String
    public let message: String
    public var description: String { "CUDA: \(call) failed: \(message)" }
}

/// A `dlopen`ed shared library: the first of `names` that loads. The NVIDIA libraries are
/// found at run time, so the binary builds, tests and runs where none is installed.
final class SharedLibrary: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer
    let path: String
    let what: String

    init(_ what: String, names: [String]) throws {
        var firstError: String?
        for name in names {
            if let h = dlopen(name, RTLD_NOW | RTLD_GLOBAL) {
                handle = h
                path = name
                self.what = what
                return
            }
            let e = dlerror().map { String(cString: $0) } ?? "not found"
            if firstError == nil { firstError = e }
        }
        throw CUDAUnavailable(library: "\(names.first ?? what) (\(what))", detail: firstError ?? "not found")
    }

    /// The function `name` as the C function type `T`.
    func function<T>(_ name: String, as type: T.Type) throws -> T {
        guard let sym = dlsym(handle, name) else {
            throw CUDAUnavailable(library: "\(path) (\(what))", detail: "it has no function \(name)")
        }
        return unsafeBitCast(sym, to: type)
    }
}

/// Where the CUDA toolkit's libraries usually live, after the loader's own search path.
let toolkitDirectories = ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib",
                          "/usr/lib/x86_64-linux-gnu"]

/// `base.13`, `base.12`, `base`, with the driver's major version first when known (a
/// toolkit newer than the driver cannot run on it).
func versioned(_ base: String, _ preferMajor: Int?) -> [String] {
    var majors = [13, 12]
    if let m = preferMajor { majors = [m] + majors.filter { $0 != m } }
    return majors.map { "\(base).\($0)" } + [base]
}

func candidates(_ sonames: [String]) -> [String] {
    sonames + toolkitDirectories.flatMap { dir in sonames.map { dir + "/" + $0 } }
}

typealias DevicePointer = UInt64

@inline(__always) func raw(_ p: DevicePointer) -> UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: UInt(p)) }

/// The CUDA driver API (`libcuda.so.1`): the functions the backend calls.
struct DriverAPI {
    typealias Result = Int32
    let cuInit: @convention(c) (UInt32) -> Result
    let cuDeviceGetCount: @convention(c) (UnsafeMutablePointer<Int32>) -> Result
    let cuDeviceGet: @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Result
    let cuDeviceGetName: @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Result
    let cuDeviceGetAttribute: @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Result
    let cuDevicePrimaryCtxRetain: @convention(c) (UnsafeMutablePointer<OpaquePointer?>, Int32) -> Result
    let cuCtxSetCurrent: @convention(c) (OpaquePointer?) -> Result
    let cuStreamCreate: @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UInt32) -> Result
    let cuStreamSynchronize: @convention(c) (OpaquePointer?) -> Result
    let cuMemAlloc: @convention(c) (UnsafeMutablePointer<DevicePointer>, Int) -> Result
    let cuMemFree: @convention(c) (DevicePointer) -> Result
    let cuMemHostAlloc: @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int, UInt32) -> Result
    let cuMemFreeHost: @convention(c) (UnsafeMutableRawPointer?) -> Result
    let cuMemcpyHtoDAsync: @convention(c) (DevicePointer, UnsafeRawPointer?, Int, OpaquePointer?) -> Result
    let cuMemcpyDtoHAsync: @convention(c) (UnsafeMutableRawPointer?, DevicePointer, Int, OpaquePointer?) -> Result
    let cuMemcpyDtoDAsync: @convention(c) (DevicePointer, DevicePointer, Int, OpaquePointer?) -> Result
    let cuMemsetD32Async: @convention(c) (DevicePointer, UInt32, Int, OpaquePointer?) -> Result
    let cuModuleLoadData: @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UnsafeRawPointer?) -> Result
    let cuModuleGetFunction: @convention(c) (UnsafeMutablePointer<OpaquePointer?>, OpaquePointer?, UnsafePointer<CChar>) -> Result
    let cuLaunchKernel: @convention(c) (OpaquePointer?, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32,
                                        OpaquePointer?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                        UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Result
    let cuGetErrorString: @convention(c) (Result, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Result
    let cuDriverGetVersion: @convention(c) (UnsafeMutablePointer<Int32>) -> Result

    init(_ lib: SharedLibrary) throws {
        cuInit = try lib.function("cuInit", as: type(of: cuInit))
        cuDeviceGetCount = try lib.function("cuDeviceGetCount", as: type(of: cuDeviceGetCount))
        cuDeviceGet = try lib.function("cuDeviceGet", as: type(of: cuDeviceGet))
        cuDeviceGetName = try lib.function("cuDeviceGetName", as: type(of: cuDeviceGetName))
        cuDeviceGetAttribute = try lib.function("cuDeviceGetAttribute", as: type(of: cuDeviceGetAttribute))
        cuDevicePrimaryCtxRetain = try lib.function("cuDevicePrimaryCtxRetain", as: type(of: cuDevicePrimaryCtxRetain))
        cuCtxSetCurrent = try lib.function("cuCtxSetCurrent", as: type(of: cuCtxSetCurrent))
        cuStreamCreate = try lib.function("cuStreamCreate", as: type(of: cuStreamCreate))
        cuStreamSynchronize = try lib.function("cuStreamSynchronize", as: type(of: cuStreamSynchronize))
        cuMemAlloc = try lib.function("cuMemAlloc_v2", as: type(of: cuMemAlloc))
        cuMemFree = try lib.function("cuMemFree_v2", as: type(of: cuMemFree))
        cuMemHostAlloc = try lib.function("cuMemHostAlloc", as: type(of: cuMemHostAlloc))
        cuMemFreeHost = try lib.function("cuMemFreeHost", as: type(of: cuMemFreeHost))
        cuMemcpyHtoDAsync = try lib.function("cuMemcpyHtoDAsync_v2", as: type(of: cuMemcpyHtoDAsync))
        cuMemcpyDtoHAsync = try lib.function("cuMemcpyDtoHAsync_v2", as: type(of: cuMemcpyDtoHAsync))
        cuMemcpyDtoDAsync = try lib.function("cuMemcpyDtoDAsync_v2", as: type(of: cuMemcpyDtoDAsync))
        cuMemsetD32Async = try lib.function("cuMemsetD32Async", as: type(of: cuMemsetD32Async))
        cuModuleLoadData = try lib.function("cuModuleLoadData", as: type(of: cuModuleLoadData))
        cuModuleGetFunction = try lib.function("cuModuleGetFunction", as: type(of: cuModuleGetFunction))
        cuLaunchKernel = try lib.function("cuLaunchKernel", as: type(of: cuLaunchKernel))
        cuGetErrorString = try lib.function("cuGetErrorString", as: type(of: cuGetErrorString))
        cuDriverGetVersion = try lib.function("cuDriverGetVersion", as: type(of: cuDriverGetVersion))
    }

    func check(_ r: Result, _ call: String) throws {
        guard r != 0 else { return }
        var s: UnsafePointer<CChar>?
        _ = cuGetErrorString(r, &s)
        throw CUDAError(call: call, message: s.map { String(cString: $0) } ?? "error \(r)")
    }
}

/// NVRTC (`libnvrtc.so`): CUDA C++ source to a GPU binary at run time. It needs no GPU and
/// no driver, so tests compile every kernel on machines without either.
public final class NVRTC: @unchecked Sendable {
    typealias Result = Int32
    let library: SharedLibrary
    let nvrtcVersion: @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Result
    let nvrtcGetErrorString: @convention(c) (Result) -> UnsafePointer<CChar>?
    let nvrtcCreateProgram: @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UnsafePointer<CChar>,
                                            UnsafePointer<CChar>?, Int32, UnsafePointer<UnsafePointer<CChar>?>?,
                                            UnsafePointer<UnsafePointer<CChar>?>?) -> Result
    let nvrtcCompileProgram: @convention(c) (OpaquePointer?, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Result
    let nvrtcGetProgramLogSize: @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int>) -> Result
    let nvrtcGetProgramLog: @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>) -> Result
    let nvrtcGetCUBINSize: @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int>) -> Result
    let nvrtcGetCUBIN: @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>) -> Result
    let nvrtcDestroyProgram: @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Result

    /// The first NVRTC found among `paths` (default: the loader's search path, then the CUDA
    /// toolkit's usual folders).
    public init(paths: [String]? = nil, preferMajor: Int? = nil) throws {
        library = try SharedLibrary("NVRTC", names: paths ?? candidates(versioned("libnvrtc.so", preferMajor)))
        nvrtcVersion = try library.function("nvrtcVersion", as: type(of: nvrtcVersion))
        nvrtcGetErrorString = try library.function("nvrtcGetErrorString", as: type(of: nvrtcGetErrorString))
        nvrtcCreateProgram = try library.function("nvrtcCreateProgram", as: type(of: nvrtcCreateProgram))
        nvrtcCompileProgram = try library.function("nvrtcCompileProgram", as: type(of: nvrtcCompileProgram))
        nvrtcGetProgramLogSize = try library.function("nvrtcGetProgramLogSize", as: type(of: nvrtcGetProgramLogSize))
        nvrtcGetProgramLog = try library.function("nvrtcGetProgramLog", as: type(of: nvrtcGetProgramLog))
        nvrtcGetCUBINSize = try library.function("nvrtcGetCUBINSize", as: type(of: nvrtcGetCUBINSize))
        nvrtcGetCUBIN = try library.function("nvrtcGetCUBIN", as: type(of: nvrtcGetCUBIN))
        nvrtcDestroyProgram = try library.function("nvrtcDestroyProgram", as: type(of: nvrtcDestroyProgram))
    }

    /// "13.0".
    public var version: String {
        var major: Int32 = 0, minor: Int32 = 0
        _ = nvrtcVersion(&major, &minor)
        return "\(major).\(minor)"
    }

    /// `source` compiled for the GPU architecture `arch` (e.g. `sm_90`): a CUBIN image for
    /// `cuModuleLoadData`. A compile error throws with NVRTC's log.
    public func compile(_ source: String, name: String, arch: String) throws -> [UInt8] {
        var prog: OpaquePointer?
        try check(nvrtcCreateProgram(&prog, source, name, 0, nil, nil), "nvrtcCreateProgram")
        defer { _ = nvrtcDestroyProgram(&prog) }
        let words: [String] = ["--gpu-architecture=\(arch)", "--std=c++17", "-default-device"]
        let options = words.map { strdup($0) }
        defer { options.forEach { free($0) } }
        let constOptions: [UnsafePointer<CChar>?] = options.map { UnsafePointer($0) }
        let r = constOptions.withUnsafeBufferPointer { nvrtcCompileProgram(prog, Int32($0.count), $0.baseAddress) }
        if r != 0 {
            var size = 0
            _ = nvrtcGetProgramLogSize(prog, &size)
            var log = [CChar](repeating: 0, count: max(size, 1))
            _ = nvrtcGetProgramLog(prog, &log)
            let text = String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw CUDAError(call: "nvrtcCompileProgram(\(name), \(arch))", message: text)
        }
        var size = 0
        try check(nvrtcGetCUBINSize(prog, &size), "nvrtcGetCUBINSize")
        var image = [CChar](repeating: 0, count: size)
        try check(nvrtcGetCUBIN(prog, &image), "nvrtcGetCUBIN")
        return image.map { UInt8(bitPattern: $0) }
    }

    func check(_ r: Result, _ call: String) throws {
        guard r != 0 else { return }
        throw CUDAError(call: call, message: nvrtcGetErrorString(r).map { String(cString: $0) } ?? "error \(r)")
    }
}

/// cuBLAS (`libcublas.so`): the linear layers' matrix products.
struct CuBLASAPI {
    typealias Status = Int32
    let cublasCreate: @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Status
    let cublasSetStream: @convention(c) (OpaquePointer?, OpaquePointer?) -> Status
    let cublasSgemm: @convention(c) (OpaquePointer?, Int32, Int32, Int32, Int32, Int32, UnsafePointer<Float>,
                                     UnsafeRawPointer?, Int32, UnsafeRawPointer?, Int32, UnsafePointer<Float>,
                                     UnsafeMutableRawPointer?, Int32) -> Status

    init(_ lib: SharedLibrary) throws {
        cublasCreate = try lib.function("cublasCreate_v2", as: type(of: cublasCreate))
        cublasSetStream = try lib.function("cublasSetStream_v2", as: type(of: cublasSetStream))
        cublasSgemm = try lib.function("cublasSgemm_v2", as: type(of: cublasSgemm))
    }

    func check(_ s: Status, _ call: String) throws {
        guard s != 0 else { return }
        throw CUDAError(call: call, message: "cuBLAS status \(s)")
    }
}

/// cuDNN (`libcudnn.so.9`): the convolutions and their two gradients, through the
/// descriptor API cuDNN 9 still carries.
struct CuDNNAPI {
    typealias Status = Int32
    typealias Handle = OpaquePointer?
    let cudnnGetErrorString: @convention(c) (Status) -> UnsafePointer<CChar>?
    let cudnnCreate: @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Status
    let cudnnSetStream: @convention(c) (Handle, OpaquePointer?) -> Status
    let cudnnCreateTensorDescriptor: @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Status
    let cudnnSetTensor4dDescriptor: @convention(c) (OpaquePointer?, Int32, Int32, Int32, Int32, Int32, Int32) -> Status
    let cudnnCreateFilterDescriptor: @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Status
    let cudnnSetFilter4dDescriptor: @convention(c) (OpaquePointer?, Int32, Int32, Int32, Int32, Int32, Int32) -> Status
    let cudnnCreateConvolutionDescriptor: @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Status
    let cudnnSetConvolution2dDescriptor: @convention(c) (OpaquePointer?, Int32, Int32, Int32, Int32, Int32, Int32,
                                                         Int32, Int32) -> Status
    let cudnnSetConvolutionMathType: @convention(c) (OpaquePointer?, Int32) -> Status
    let cudnnFindConvolutionForwardAlgorithm: @convention(c) (Handle, OpaquePointer?, OpaquePointer?, OpaquePointer?,
                                                              OpaquePointer?, Int32, UnsafeMutablePointer<Int32>,
                                                              UnsafeMutableRawPointer) -> Status
    let cudnnFindConvolutionBackwardDataAlgorithm: @convention(c) (Handle, OpaquePointer?, OpaquePointer?,
                                                                   OpaquePointer?, OpaquePointer?, Int32,
                                                                   UnsafeMutablePointer<Int32>,
                                                                   UnsafeMutableRawPointer) -> Status
    let cudnnFindConvolutionBackwardFilterAlgorithm: @convention(c) (Handle, OpaquePointer?, OpaquePointer?,
                                                                     OpaquePointer?, OpaquePointer?, Int32,
                                                                     UnsafeMutablePointer<Int32>,
                                                                     UnsafeMutableRawPointer) -> Status
    let cudnnConvolutionForward: @convention(c) (Handle, UnsafeRawPointer, OpaquePointer?, UnsafeRawPointer?,
                                                 OpaquePointer?, UnsafeRawPointer?, OpaquePointer?, Int32,
                                                 UnsafeMutableRawPointer?, Int, UnsafeRawPointer, OpaquePointer?,
                                                 UnsafeMutableRawPointer?) -> Status
    let cudnnConvolutionBackwardData: @convention(c) (Handle, UnsafeRawPointer, OpaquePointer?, UnsafeRawPointer?,
                                                      OpaquePointer?, UnsafeRawPointer?, OpaquePointer?, Int32,
                                                      UnsafeMutableRawPointer?, Int, UnsafeRawPointer, OpaquePointer?,
                                                      UnsafeMutableRawPointer?) -> Status
    let cudnnConvolutionBackwardFilter: @convention(c) (Handle, UnsafeRawPointer, OpaquePointer?, UnsafeRawPointer?,
                                                        OpaquePointer?, UnsafeRawPointer?, OpaquePointer?, Int32,
                                                        UnsafeMutableRawPointer?, Int, UnsafeRawPointer,
                                                        OpaquePointer?, UnsafeMutableRawPointer?) -> Status

    init(_ lib: SharedLibrary) throws {
        cudnnGetErrorString = try lib.function("cudnnGetErrorString", as: type(of: cudnnGetErrorString))
        cudnnCreate = try lib.function("cudnnCreate", as: type(of: cudnnCreate))
        cudnnSetStream = try lib.function("cudnnSetStream", as: type(of: cudnnSetStream))
        cudnnCreateTensorDescriptor = try lib.function("cudnnCreateTensorDescriptor", as: type(of: cudnnCreateTensorDescriptor))
        cudnnSetTensor4dDescriptor = try lib.function("cudnnSetTensor4dDescriptor", as: type(of: cudnnSetTensor4dDescriptor))
        cudnnCreateFilterDescriptor = try lib.function("cudnnCreateFilterDescriptor", as: type(of: cudnnCreateFilterDescriptor))
        cudnnSetFilter4dDescriptor = try lib.function("cudnnSetFilter4dDescriptor", as: type(of: cudnnSetFilter4dDescriptor))
        cudnnCreateConvolutionDescriptor = try lib.function("cudnnCreateConvolutionDescriptor",
                                                            as: type(of: cudnnCreateConvolutionDescriptor))
        cudnnSetConvolution2dDescriptor = try lib.function("cudnnSetConvolution2dDescriptor",
                                                           as: type(of: cudnnSetConvolution2dDescriptor))
        cudnnSetConvolutionMathType = try lib.function("cudnnSetConvolutionMathType", as: type(of: cudnnSetConvolutionMathType))
        cudnnFindConvolutionForwardAlgorithm = try lib.function("cudnnFindConvolutionForwardAlgorithm",
                                                                as: type(of: cudnnFindConvolutionForwardAlgorithm))
        cudnnFindConvolutionBackwardDataAlgorithm = try lib.function("cudnnFindConvolutionBackwardDataAlgorithm",
                                                                     as: type(of: cudnnFindConvolutionBackwardDataAlgorithm))
        cudnnFindConvolutionBackwardFilterAlgorithm = try lib.function(
            "cudnnFindConvolutionBackwardFilterAlgorithm", as: type(of: cudnnFindConvolutionBackwardFilterAlgorithm))
        cudnnConvolutionForward = try lib.function("cudnnConvolutionForward", as: type(of: cudnnConvolutionForward))
        cudnnConvolutionBackwardData = try lib.function("cudnnConvolutionBackwardData",
                                                        as: type(of: cudnnConvolutionBackwardData))
        cudnnConvolutionBackwardFilter = try lib.function("cudnnConvolutionBackwardFilter",
                                                          as: type(of: cudnnConvolutionBackwardFilter))
    }

    func check(_ s: Status, _ call: String) throws {
        guard s != 0 else { return }
        throw CUDAError(call: call, message: cudnnGetErrorString(s).map { String(cString: $0) } ?? "status \(s)")
    }
}
