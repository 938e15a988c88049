/// Why a data set could not be read. Every message names the file and what was expected.
public enum DataError: Error, CustomStringConvertible, Equatable {
    case missingDirectory(path: String, hint: String)
    case missingFile(path: String, hint: String)
    case truncated(path: String, expectedBytes: Int, actualBytes: Int)
    case badHeader(path: String, detail: String)
    case corrupt(path: String, detail: String)
    case unknownDataset(name: String)

    public var description: String {
        switch self {
        case .missingDirectory(let p, let hint): return "data folder '\(p)' does not exist. \(hint)"
        case .missingFile(let p, let hint): return "data file '\(p)' does not exist. \(hint)"
        case .truncated(let p, let e, let a):
            return "'\(p)' is truncated: expected \(e) bytes of data, found \(a)"
        case .badHeader(let p, let d): return "'\(p)' is not a valid file of this kind: \(d)"
        case .corrupt(let p, let d): return "'\(p)' is corrupt: \(d)"
        case .unknownDataset(let n):
            return "unknown dataset '\(n)'; known: \(DatasetKind.allCases.map(\.rawValue).joined(separator: ", "))"
        }
    }
}
