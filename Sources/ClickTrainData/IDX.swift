import CZlib
import Foundation

/// Reads the IDX format of MNIST and Fashion-MNIST (LeCun): a 4-byte magic
/// (0, 0, type, rank), `rank` big-endian u32 dimensions, then the data. Only unsigned
/// bytes (type 0x08) are used by these data sets. The file may be gzip-compressed or raw
/// (zlib reads both).
public enum IDX {
    /// One IDX array: its dimensions (e.g. [60000, 28, 28] for images) and its bytes.
    public struct Array: Sendable {
        public var dims: [Int]
        public var bytes: [UInt8]
    }

    /// The whole (decompressed) content of a file, raw or gzip.
    public static func readAll(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            if FileManager.default.fileExists(atPath: path) { throw DataError.corrupt(path: path, detail: "cannot read") }
            throw DataError.missingFile(path: path, hint: "")
        }
        return try decompress([UInt8](data), path: path)
    }

    /// `bytes` as they are, or inflated when they start with the gzip magic (1f 8b); several
    /// gzip members one after another are inflated one after another, as gunzip does.
    public static func decompress(_ bytes: [UInt8], path: String) throws -> [UInt8] {
        guard bytes.count >= 2, bytes[0] == 0x1f, bytes[1] == 0x8b else { return bytes }
        guard bytes.count <= Int(UInt32.max) else { throw DataError.corrupt(path: path, detail: "gzip files over 4 GiB are not read") }
        var stream = z_stream()
        // 15 + 16: a gzip header and trailer around a deflate stream of up to 32 KiB windows.
        guard inflateInit2_(&stream, 15 + 16, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw DataError.corrupt(path: path, detail: "gzip: cannot start zlib")
        }
        defer { inflateEnd(&stream) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        try bytes.withUnsafeBufferPointer { input in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress!)
            stream.avail_in = UInt32(input.count)
            while true {
                let (status, produced) = chunk.withUnsafeMutableBufferPointer { buf -> (Int32, Int) in
                    stream.next_out = buf.baseAddress
                    stream.avail_out = UInt32(buf.count)
                    let status = inflate(&stream, Z_NO_FLUSH)
                    return (status, buf.count - Int(stream.avail_out))
                }
                out += chunk[0..<produced]
                switch status {
                case Z_STREAM_END:
                    // Another member follows, or the end of the file.
                    guard stream.avail_in > 0 else { return }
                    guard inflateReset(&stream) == Z_OK else { throw DataError.corrupt(path: path, detail: "gzip: cannot restart") }
                case Z_OK:
                    if stream.avail_in == 0 && produced == 0 {
                        throw DataError.truncated(path: path, expectedBytes: out.count + 1, actualBytes: out.count)
                    }
                case Z_BUF_ERROR:
                    // No progress possible: the input ended inside a member.
                    throw DataError.corrupt(path: path, detail: "gzip: the file ends inside the compressed data (truncated)")
                default:
                    let msg = stream.msg.map { String(cString: $0) } ?? "error \(status)"
                    throw DataError.corrupt(path: path, detail: "gzip: \(msg)")
                }
            }
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
        // The product of four 32-bit sizes can overflow: check it against the file instead.
        var expected = 1
        for d in dims {
            let (p, overflow) = expected.multipliedReportingOverflow(by: d)
            guard !overflow, p <= b.count else {
                throw DataError.truncated(path: path, expectedBytes: overflow ? Int.max : p, actualBytes: b.count - header)
            }
            expected = p
        }
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
