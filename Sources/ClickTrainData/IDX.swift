import CZlib
import Foundation

/// Reads the IDX format of MNIST and Fashion-MNIST (LeCun): a 4-byte magic
/// (0, 0, type, rank), `rank` big-endian u32 dimensions, then the data. Only unsigned
/// bytes (type 0x08) are used by these data sets. The file may be gzip-compressed or raw
/// (zlib reads both).
public enum IDX {
    public struct Array: Sendable {
        public var dims: [Int]
        public var bytes: [UInt8]
    }

    /// The whole (decompressed) content of a file, raw or gzip.
    public static func readAll(_ path: String) throws -> [UInt8] {
        guard FileManager.default.fileExists(atPath: path) else {
            throw DataError.missingFile(path: path, hint: "")
        }
        guard let f = gzopen(path, "rb") else { throw DataError.corrupt(path: path, detail: "cannot open") }
        defer { gzclose(f) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { gzread(f, $0.baseAddress, UInt32($0.count)) }
            if n < 0 {
                var errnum: Int32 = 0
                let msg = gzerror(f, &errnum).map { String(cString: $0) } ?? "read error"
                throw DataError.corrupt(path: path, detail: "gzip: \(msg)")
            }
            if n == 0 { break }
            out += chunk[0..<Int(n)]
        }
        // gzread stops quietly at a truncated gzip stream; gzerror then reports it.
        var errnum: Int32 = 0
        let msg = gzerror(f, &errnum).map { String(cString: $0) } ?? ""
        if errnum != Z_OK && errnum != Z_STREAM_END {
            throw DataError.corrupt(path: path, detail: "gzip: \(msg)")
        }
        return out
    }

    public static func read(_ path: String) throws -> Array {
        let b = try readAll(path)
        return try parse(b, path: path)
    }

    public static func parse(_ b: [UInt8], path: String) throws -> Array {
        guard b.count >= 4 else { throw DataError.badHeader(path: path, detail: "shorter than the 4-byte magic") }
        guard b[0] == 0, b[1] == 0 else {
            throw DataError.badHeader(path: path, detail: "magic must start with two zero bytes (is it an IDX file?)")
        }
        guard b[2] == 0x08 else {
            throw DataError.badHeader(path: path, detail: "data type 0x\(String(b[2], radix: 16)); only unsigned bytes (0x08) are supported")
        }
        let rank = Int(b[3])
        guard rank >= 1 && rank <= 4, b.count >= 4 + 4 * rank else {
            throw DataError.badHeader(path: path, detail: "rank \(rank) with a \(b.count)-byte file")
        }
        var dims: [Int] = []
        for i in 0..<rank {
            let o = 4 + 4 * i
            dims.append(Int(b[o]) << 24 | Int(b[o + 1]) << 16 | Int(b[o + 2]) << 8 | Int(b[o + 3]))
        }
        let header = 4 + 4 * rank
        let expected = dims.reduce(1, *)
        guard b.count - header >= expected else {
            throw DataError.truncated(path: path, expectedBytes: expected, actualBytes: b.count - header)
        }
        guard b.count - header == expected else {
            throw DataError.corrupt(path: path, detail: "\(b.count - header - expected) bytes after the data")
        }
        return Array(dims: dims, bytes: [UInt8](b[header...]))
    }

    /// Writes an unsigned-byte IDX file (raw, or gzip when the path ends in .gz): used by
    /// the tests and to export data.
    public static func write(_ path: String, dims: [Int], bytes: [UInt8]) throws {
        var out: [UInt8] = [0, 0, 0x08, UInt8(dims.count)]
        for d in dims { out += [UInt8(d >> 24 & 255), UInt8(d >> 16 & 255), UInt8(d >> 8 & 255), UInt8(d & 255)] }
        out += bytes
        if path.hasSuffix(".gz") {
            guard let f = gzopen(path, "wb") else { throw DataError.corrupt(path: path, detail: "cannot create") }
            let n = out.withUnsafeBytes { gzwrite(f, $0.baseAddress, UInt32($0.count)) }
            gzclose(f)
            if Int(n) != out.count { throw DataError.corrupt(path: path, detail: "short write") }
        } else {
            try Data(out).write(to: URL(fileURLWithPath: path))
        }
    }
}
