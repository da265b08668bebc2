from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DownloadChunk(_message.Message):
    __slots__ = ["data"]
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ["follow_symlinks", "name", "path"]
    FOLLOW_SYMLINKS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    follow_symlinks: bool
    name: str
    path: str
    def __init__(self, path: _Optional[str] = ..., follow_symlinks: bool = ..., name: _Optional[str] = ...) -> None: ...

class ExecExit(_message.Message):
    __slots__ = ["duration_ms", "error", "exit_code", "signal", "timed_out"]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    duration_ms: float
    error: str
    exit_code: int
    signal: int
    timed_out: bool
    def __init__(self, exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., timed_out: bool = ..., duration_ms: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class ExecInput(_message.Message):
    __slots__ = ["close_stdin", "signal", "start", "stdin"]
    CLOSE_STDIN_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    close_stdin: bool
    signal: int
    start: ExecRequest
    stdin: bytes
    def __init__(self, start: _Optional[_Union[ExecRequest, _Mapping]] = ..., stdin: _Optional[bytes] = ..., close_stdin: bool = ..., signal: _Optional[int] = ...) -> None: ...

class ExecOutput(_message.Message):
    __slots__ = ["exit", "started", "stderr", "stdout"]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    exit: ExecExit
    started: ExecStarted
    stderr: bytes
    stdout: bytes
    def __init__(self, started: _Optional[_Union[ExecStarted, _Mapping]] = ..., stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., exit: _Optional[_Union[ExecExit, _Mapping]] = ...) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ["argv", "cwd", "env", "stdin", "timeout_s", "user"]
    class EnvEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ARGV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    argv: _containers.RepeatedScalarFieldContainer[str]
    cwd: str
    env: _containers.ScalarMap[str, str]
    stdin: bool
    timeout_s: float
    user: str
    def __init__(self, argv: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., cwd: _Optional[str] = ..., user: _Optional[str] = ..., timeout_s: _Optional[float] = ..., stdin: bool = ...) -> None: ...

class ExecStarted(_message.Message):
    __slots__ = ["exec_id", "pid"]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    exec_id: str
    pid: int
    def __init__(self, exec_id: _Optional[str] = ..., pid: _Optional[int] = ...) -> None: ...

class GuestMetrics(_message.Message):
    __slots__ = ["cpu_busy_s", "cpu_total_s", "disk_total_bytes", "disk_used_bytes", "mem_available_bytes", "mem_total_bytes", "processes", "uptime_s"]
    CPU_BUSY_S_FIELD_NUMBER: _ClassVar[int]
    CPU_TOTAL_S_FIELD_NUMBER: _ClassVar[int]
    DISK_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    cpu_busy_s: float
    cpu_total_s: float
    disk_total_bytes: int
    disk_used_bytes: int
    mem_available_bytes: int
    mem_total_bytes: int
    processes: int
    uptime_s: float
    def __init__(self, cpu_busy_s: _Optional[float] = ..., cpu_total_s: _Optional[float] = ..., mem_total_bytes: _Optional[int] = ..., mem_available_bytes: _Optional[int] = ..., processes: _Optional[int] = ..., uptime_s: _Optional[float] = ..., disk_total_bytes: _Optional[int] = ..., disk_used_bytes: _Optional[int] = ...) -> None: ...

class KillReply(_message.Message):
    __slots__ = ["found"]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: bool = ...) -> None: ...

class KillRequest(_message.Message):
    __slots__ = ["exec_id", "signal"]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    exec_id: str
    signal: int
    def __init__(self, exec_id: _Optional[str] = ..., signal: _Optional[int] = ...) -> None: ...

class MetricsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class PingReply(_message.Message):
    __slots__ = ["agent_version", "uptime_s"]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    uptime_s: float
    def __init__(self, agent_version: _Optional[str] = ..., uptime_s: _Optional[float] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class PrepareSnapshotReply(_message.Message):
    __slots__ = ["mem_available_bytes"]
    MEM_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    mem_available_bytes: int
    def __init__(self, mem_available_bytes: _Optional[int] = ...) -> None: ...

class PrepareSnapshotRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class Ready(_message.Message):
    __slots__ = ["agent_version", "boot_ms", "cpus", "kernel", "memory_bytes"]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    BOOT_MS_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    boot_ms: float
    cpus: int
    kernel: str
    memory_bytes: int
    def __init__(self, agent_version: _Optional[str] = ..., boot_ms: _Optional[float] = ..., kernel: _Optional[str] = ..., cpus: _Optional[int] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class RestoreReply(_message.Message):
    __slots__ = ["agent_version", "kernel", "restore_ms", "uptime_s"]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    RESTORE_MS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    kernel: str
    restore_ms: float
    uptime_s: float
    def __init__(self, agent_version: _Optional[str] = ..., kernel: _Optional[str] = ..., uptime_s: _Optional[float] = ..., restore_ms: _Optional[float] = ...) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ["entropy", "hostname", "machine_id", "unix_time_ns"]
    ENTROPY_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    MACHINE_ID_FIELD_NUMBER: _ClassVar[int]
    UNIX_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    entropy: bytes
    hostname: str
    machine_id: str
    unix_time_ns: int
    def __init__(self, entropy: _Optional[bytes] = ..., hostname: _Optional[str] = ..., machine_id: _Optional[str] = ..., unix_time_ns: _Optional[int] = ...) -> None: ...

class ShutdownReply(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class UploadReply(_message.Message):
    __slots__ = ["bytes", "entries", "path"]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    entries: int
    path: str
    def __init__(self, path: _Optional[str] = ..., entries: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ["data", "finish", "start"]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    finish: bool
    start: UploadStart
    def __init__(self, start: _Optional[_Union[UploadStart, _Mapping]] = ..., data: _Optional[bytes] = ..., finish: bool = ...) -> None: ...

class UploadStart(_message.Message):
    __slots__ = ["dest", "overwrite"]
    DEST_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    dest: str
    overwrite: bool
    def __init__(self, dest: _Optional[str] = ..., overwrite: bool = ...) -> None: ...
