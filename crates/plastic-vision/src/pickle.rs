//! The data-set pickles of `docs/fsc.md` §1: a dict whose `data` is a numpy `uint8` array
//! `(N, S, S, 3)` and whose `labels` is a list of ints.
//!
//! No maintained Rust crate reads these: `serde-pickle` (the maintained pickle crate)
//! either rejects the numpy globals (`numpy.core.multiarray._reconstruct`, `numpy.dtype`)
//! or, with `replace_unresolved_globals`, replaces them by `None`, losing the pixels. So
//! this module is a small pickle machine for exactly the opcodes these files use, as
//! written by Python 2 (protocol 2, the pixel payload a `str`, read as latin1 bytes) and by
//! Python 3 (protocols 2–5, with numpy 1.x or 2.x module names). Everything else is an
//! error naming the opcode and its offset. Every length is checked against the remaining
//! input before anything is allocated, containers nest at most [`MAX_DEPTH`] deep, and no
//! recursion depends on the input, so a corrupt or hostile file gives an error, never a
//! panic or a huge allocation.
//!
//! Values follow Python's semantics with one restriction: containers are values, shared
//! through the memo. A memoised container that is modified afterwards (as every pickler
//! does for a list or dict it fills with `APPENDS`/`SETITEMS`) is updated in the memo too;
//! if it is also referenced from inside another container (only recursive or aliased
//! structures do that, never these data-set files), the file is rejected rather than read
//! with a stale copy.

use std::collections::HashMap;
use std::rc::Rc;

/// The deepest nesting of containers accepted.
pub const MAX_DEPTH: usize = 64;

/// The contents of a data-set pickle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetPickle {
    /// The `data` array's bytes, row-major (C order).
    pub data: Vec<u8>,
    /// The `data` array's shape `(N, S, S, 3)` as stored (checked to be 4-D).
    pub shape: [usize; 4],
    /// The `labels` list.
    pub labels: Vec<i64>,
}

/// A pixel payload: a range of the input (no copy) or bytes made while reading.
#[derive(Debug, Clone)]
enum Bytes {
    Input(std::ops::Range<usize>),
    Owned(Rc<Vec<u8>>),
}

/// A Python value as far as these files need.
#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// A Python 3 `str` (unicode).
    Str(Rc<str>),
    /// A Python 2 `str` (`BINSTRING`): bytes, read as latin1 text where text is expected.
    LegacyStr(Bytes),
    /// `bytes` or `bytearray`.
    Bytes(Bytes),
    Tuple(Rc<Container<Vec<Value>>>),
    List(Rc<Container<Vec<Value>>>),
    Dict(Rc<Container<Vec<(Value, Value)>>>),
    /// A `module.name` reference (a class or function).
    Global(Rc<(String, String)>),
    /// The result of calling a global on arguments (`REDUCE`), with its `BUILD` state.
    Object(Rc<Container<Object>>),
    /// Marks a memo slot whose container was modified while also held elsewhere.
    Stale,
}

#[derive(Debug, Clone)]
struct Object {
    callable: (String, String),
    args: Value,
    state: Option<Value>,
}

/// A container with its nesting depth (1 + its deepest element's).
#[derive(Debug, Clone)]
struct Container<T> {
    depth: usize,
    items: T,
}

impl Value {
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(c) | Value::List(c) => c.depth,
            Value::Dict(c) => c.depth,
            Value::Object(c) => c.depth,
            _ => 0,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Str(_) => "str",
            Value::LegacyStr(_) => "str (Python 2)",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Object(_) => "object",
            Value::Stale => "stale reference",
        }
    }

    /// The address of a container's shared allocation, to find its memo slots.
    fn container_ptr(&self) -> Option<*const ()> {
        match self {
            Value::Tuple(c) | Value::List(c) => Some(Rc::as_ptr(c) as *const ()),
            Value::Dict(c) => Some(Rc::as_ptr(c) as *const ()),
            Value::Object(c) => Some(Rc::as_ptr(c) as *const ()),
            _ => None,
        }
    }
}

fn tuple(items: Vec<Value>) -> Result<Value, String> {
    let depth = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
    check_depth(depth)?;
    Ok(Value::Tuple(Rc::new(Container { depth, items })))
}

fn check_depth(depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        Err(format!("containers nested deeper than {MAX_DEPTH} levels"))
    } else {
        Ok(())
    }
}

/// The pickle machine: input, position, stack, mark stack and memo.
struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Memo entries inspected so far, bounded by [`MAX_MEMO_WORK`].
    memo_work: usize,
}

/// A bound on the work of finding a modified container's memo slots (crafted files could
/// otherwise make it quadratic in their size).
const MAX_MEMO_WORK: usize = 50_000_000;

impl<'a> Machine<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], String> {
        let remaining = (self.input.len() - self.pos) as u64;
        if n > remaining {
            return Err(format!(
                "truncated: {what} needs {n} bytes at offset {} but only {remaining} remain",
                self.pos
            ));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.input[start..self.pos])
    }

    fn take_range(&mut self, n: u64, what: &str) -> Result<std::ops::Range<usize>, String> {
        let start = self.pos;
        self.take(n, what)?;
        Ok(start..self.pos)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1, "an opcode argument")?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2, "a 2-byte argument")?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4, "a 4-byte argument")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8, "an 8-byte argument")?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.input[self.pos..];
        let end = rest
            .iter()
            .take(1024)
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("unterminated text line at offset {}", self.pos))?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| "a global name is not UTF-8".to_string())
    }

    fn text(&mut self, n: u64) -> Result<Value, String> {
        let bytes = self.take(n, "a string")?;
        let s = std::str::from_utf8(bytes)
            .map_err(|_| format!("invalid UTF-8 in a string before offset {}", self.pos))?;
        Ok(Value::Str(s.into()))
    }

    fn pop(&mut self) -> Result<Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(format!("stack underflow at offset {}", self.pos));
        }
        self.stack
            .pop()
            .ok_or_else(|| format!("stack underflow at offset {}", self.pos))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| format!("no MARK before offset {}", self.pos))?;
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(format!("stack underflow at offset {}", self.pos));
        }
        let pos = self.pos;
        self.stack
            .last_mut()
            .ok_or_else(|| format!("stack underflow at offset {pos}"))
    }

    /// Prepares the container on top of the stack to be modified in place: the memo slots
    /// that share it are released (and given the modified container back afterwards by
    /// [`Machine::rememo`]); if anything else still shares it, the file is rejected.
    fn unshare_top(&mut self) -> Result<Vec<u32>, String> {
        let ptr = self
            .top()?
            .container_ptr()
            .ok_or_else(|| format!("modifying a non-container at offset {}", self.pos))?;
        self.memo_work += self.memo.len();
        if self.memo_work > MAX_MEMO_WORK {
            return Err("the pickle's memo is too large for a data-set file".into());
        }
        let slots: Vec<u32> = self
            .memo
            .iter()
            .filter(|(_, v)| v.container_ptr() == Some(ptr))
            .map(|(&k, _)| k)
            .collect();
        for k in &slots {
            self.memo.insert(*k, Value::Stale);
        }
        let shared = match self.top()? {
            Value::Tuple(c) | Value::List(c) => Rc::strong_count(c) > 1,
            Value::Dict(c) => Rc::strong_count(c) > 1,
            Value::Object(c) => Rc::strong_count(c) > 1,
            _ => false,
        };
        if shared {
            return Err(format!(
                "a container modified at offset {} is also referenced from another container \
                 (recursive or aliased structures are not supported in a data-set pickle)",
                self.pos
            ));
        }
        Ok(slots)
    }

    fn rememo(&mut self, slots: Vec<u32>) -> Result<(), String> {
        let top = self.top()?.clone();
        for k in slots {
            self.memo.insert(k, top.clone());
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<(), String> {
        let slots = self.unshare_top()?;
        let pos = self.pos;
        match self.top()? {
            Value::List(c) => {
                let c = Rc::get_mut(c).ok_or("internal: shared list")?;
                let depth = items.iter().map(Value::depth).max().unwrap_or(0) + 1;
                check_depth(depth)?;
                c.depth = c.depth.max(depth);
                c.items.extend(items);
            }
            other => return Err(format!("APPEND(S) to a {} at offset {pos}", other.kind())),
        }
        self.rememo(slots)
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        if items.len() & 1 == 1 {
            return Err(format!(
                "SETITEMS with an odd item count at offset {}",
                self.pos
            ));
        }
        let slots = self.unshare_top()?;
        let pos = self.pos;
        match self.top()? {
            Value::Dict(c) => {
                let c = Rc::get_mut(c).ok_or("internal: shared dict")?;
                let depth = items.iter().map(Value::depth).max().unwrap_or(0) + 1;
                check_depth(depth)?;
                c.depth = c.depth.max(depth);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    c.items.push((k, v));
                }
            }
            other => return Err(format!("SETITEM(S) on a {} at offset {pos}", other.kind())),
        }
        self.rememo(slots)
    }

    fn build(&mut self, state: Value) -> Result<(), String> {
        let slots = self.unshare_top()?;
        let pos = self.pos;
        match self.top()? {
            Value::Object(c) => {
                let c = Rc::get_mut(c).ok_or("internal: shared object")?;
                if c.items.state.is_some() {
                    return Err(format!("BUILD of an object twice at offset {pos}"));
                }
                let depth = state.depth() + 1;
                check_depth(depth)?;
                c.depth = c.depth.max(depth);
                c.items.state = Some(state);
            }
            other => return Err(format!("BUILD on a {} at offset {pos}", other.kind())),
        }
        self.rememo(slots)
    }

    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value, String> {
        let Value::Global(g) = callable else {
            return Err(format!(
                "REDUCE of a {} at offset {}",
                callable.kind(),
                self.pos
            ));
        };
        let (module, name) = (g.0.as_str(), g.1.as_str());
        if !matches!(args, Value::Tuple(_)) {
            return Err(format!(
                "REDUCE arguments are a {}, not a tuple",
                args.kind()
            ));
        }
        // `_codecs.encode(text, 'latin1')`: how Python 3 writes bytes at protocol 2.
        if (module, name) == ("_codecs", "encode") {
            let items = tuple_items(&args);
            let (text, encoding) = match items {
                [Value::Str(t), Value::Str(e)] => (t.clone(), e.clone()),
                _ => return Err("_codecs.encode arguments are not (str, str)".into()),
            };
            if !matches!(&*encoding, "latin1" | "latin-1" | "iso-8859-1") {
                return Err(format!(
                    "_codecs.encode with encoding `{encoding}` (only latin1)"
                ));
            }
            let mut out = Vec::with_capacity(text.len());
            for ch in text.chars() {
                let code = ch as u32;
                if code > 255 {
                    return Err("_codecs.encode of a character beyond latin1".into());
                }
                out.push(code as u8);
            }
            return Ok(Value::Bytes(Bytes::Owned(Rc::new(out))));
        }
        let allowed = matches!(
            (module, name),
            (
                "numpy.core.multiarray" | "numpy._core.multiarray",
                "_reconstruct"
            ) | ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer")
                | ("numpy", "dtype")
                | ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar")
        );
        if !allowed {
            return Err(format!(
                "the file calls `{module}.{name}`; a data-set pickle only holds numpy arrays, \
                 lists, ints and strings"
            ));
        }
        let depth = args.depth() + 1;
        check_depth(depth)?;
        Ok(Value::Object(Rc::new(Container {
            depth,
            items: Object {
                callable: (module.to_string(), name.to_string()),
                args,
                state: None,
            },
        })))
    }

    fn global(&mut self, module: &str, name: &str) -> Result<Value, String> {
        let known = matches!(
            (module, name),
            ("_codecs", "encode")
                | ("numpy", "ndarray")
                | ("numpy", "dtype")
                | (
                    "numpy.core.multiarray" | "numpy._core.multiarray",
                    "_reconstruct"
                )
                | ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar")
                | ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer")
                | ("__builtin__" | "builtins", "bytearray")
        );
        if !known {
            return Err(format!(
                "unsupported global `{module}.{name}` at offset {}; a data-set pickle only \
                 uses numpy arrays",
                self.pos
            ));
        }
        Ok(Value::Global(Rc::new((
            module.to_string(),
            name.to_string(),
        ))))
    }

    fn memo_put(&mut self, key: u32) -> Result<(), String> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), String> {
        match self.memo.get(&key) {
            Some(Value::Stale) | None => Err(format!(
                "memo key {key} is not defined (offset {})",
                self.pos
            )),
            Some(v) => {
                let v = v.clone();
                self.stack.push(v);
                Ok(())
            }
        }
    }

    /// Runs the machine to `STOP` and returns the pickled value.
    fn run(&mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.take(1, "an opcode")?[0];
            if at == 0 && op != 0x80 {
                return Err(format!(
                    "not a pickle of protocol 2 to 5: it starts with byte 0x{op:02x}, not the \
                     PROTO opcode 0x80"
                ));
            }
            match op {
                0x80 => {
                    // PROTO
                    let p = self.u8()?;
                    if !(2..=5).contains(&p) {
                        return Err(format!("pickle protocol {p}; only 2 to 5 are supported"));
                    }
                }
                0x95 => {
                    // FRAME: a length hint; frames are read as ordinary input.
                    let n = self.u64()?;
                    if n > (self.input.len() - self.pos) as u64 {
                        return Err(format!("truncated: a frame of {n} bytes at offset {at}"));
                    }
                }
                b'.' => {
                    // STOP
                    let v = self.pop()?;
                    if !self.stack.is_empty() || !self.marks.is_empty() {
                        return Err("values left on the stack at STOP".into());
                    }
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Rc::new(Container {
                    depth: 1,
                    items: Vec::new(),
                }))),
                b']' => self.stack.push(Value::List(Rc::new(Container {
                    depth: 1,
                    items: Vec::new(),
                }))),
                b')' => self.stack.push(tuple(Vec::new())?),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(tuple(items)?);
                }
                0x85..=0x87 => {
                    // TUPLE1, TUPLE2, TUPLE3
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(tuple(items)?);
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    // MEMOIZE
                    let k = u32::try_from(self.memo.len()).map_err(|_| "memo overflow")?;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k)?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?;
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    let g = self.global(&module, &name)?;
                    self.stack.push(g);
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(m), Value::Str(n)) = (&module, &name) else {
                        return Err(format!("STACK_GLOBAL of non-strings at offset {at}"));
                    };
                    let g = self.global(m, n)?;
                    self.stack.push(g);
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop()?;
                    self.build(state)?;
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a => {
                    // LONG1: little-endian two's complement, at most 8 bytes here.
                    let n = self.u8()? as u64;
                    if n > 8 {
                        return Err(format!("an integer of {n} bytes at offset {at}"));
                    }
                    let b = self.take(n, "an integer")?;
                    let mut v: i64 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= (byte as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n as usize - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'X' => {
                    let n = self.u32()? as u64;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as u64;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.u64()?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'T' => {
                    // BINSTRING: a Python 2 str (signed 4-byte length).
                    let n = self.u32()? as i32;
                    let n = u64::try_from(n).map_err(|_| "a negative string length")?;
                    let r = self.take_range(n, "a string")?;
                    self.stack.push(Value::LegacyStr(Bytes::Input(r)));
                }
                b'U' => {
                    let n = self.u8()? as u64;
                    let r = self.take_range(n, "a string")?;
                    self.stack.push(Value::LegacyStr(Bytes::Input(r)));
                }
                b'B' => {
                    let n = self.u32()? as u64;
                    let r = self.take_range(n, "bytes")?;
                    self.stack.push(Value::Bytes(Bytes::Input(r)));
                }
                b'C' => {
                    let n = self.u8()? as u64;
                    let r = self.take_range(n, "bytes")?;
                    self.stack.push(Value::Bytes(Bytes::Input(r)));
                }
                0x8e | 0x96 => {
                    // BINBYTES8, BYTEARRAY8
                    let n = self.u64()?;
                    let r = self.take_range(n, "bytes")?;
                    self.stack.push(Value::Bytes(Bytes::Input(r)));
                }
                _ => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{op:02x} at offset {at}; a data-set \
                         pickle uses protocol 2 to 5 with dicts, lists, ints, strings and \
                         numpy arrays only"
                    ))
                }
            }
        }
    }
}

fn tuple_items(v: &Value) -> &[Value] {
    match v {
        Value::Tuple(c) => &c.items,
        _ => &[],
    }
}

/// The text of a `str` (Python 3) or of a Python 2 `str` read as latin1.
fn as_text(v: &Value, input: &[u8]) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.to_string()),
        Value::LegacyStr(b) => Some(bytes_of(b, input).iter().map(|&c| c as char).collect()),
        _ => None,
    }
}

fn bytes_of<'b>(b: &'b Bytes, input: &'b [u8]) -> &'b [u8] {
    match b {
        Bytes::Input(r) => &input[r.clone()],
        Bytes::Owned(v) => v,
    }
}

/// The bytes of `bytes`, `bytearray`, or a Python 2 `str` (latin1).
fn as_bytes(v: &Value) -> Option<&Bytes> {
    match v {
        Value::Bytes(b) | Value::LegacyStr(b) => Some(b),
        _ => None,
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Bool(b) => Some(*b as i64),
        _ => None,
    }
}

/// A parsed numpy array: its dtype string, shape, order and payload.
struct Array {
    dtype: String,
    shape: Vec<usize>,
    fortran: bool,
    payload: Bytes,
}

fn object(v: &Value) -> Option<&Object> {
    match v {
        Value::Object(c) => Some(&c.items),
        _ => None,
    }
}

fn is_numpy(callable: &(String, String), name: &str) -> bool {
    callable.1 == name
        && matches!(
            callable.0.as_str(),
            "numpy.core.multiarray"
                | "numpy._core.multiarray"
                | "numpy.core.numeric"
                | "numpy._core.numeric"
        )
}

/// The dtype of a `numpy.dtype(...)` object: its type string with the byte order of its
/// state (e.g. `u1`, `<f4`).
fn dtype_of(v: &Value, input: &[u8]) -> Result<String, String> {
    let obj = object(v).filter(|o| o.callable == ("numpy".into(), "dtype".into()));
    let obj = obj.ok_or_else(|| format!("the array's dtype is a {}", v.kind()))?;
    let name = tuple_items(&obj.args)
        .first()
        .and_then(|t| as_text(t, input))
        .ok_or("a numpy dtype without a type string")?;
    let order = obj
        .state
        .as_ref()
        .and_then(|s| tuple_items(s).get(1))
        .and_then(|o| as_text(o, input))
        .unwrap_or_default();
    Ok(if order == "|" || order.is_empty() {
        name
    } else {
        format!("{order}{name}")
    })
}

fn shape_of(v: &Value) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(c) => c
            .items
            .iter()
            .map(|d| {
                as_int(d)
                    .and_then(|i| usize::try_from(i).ok())
                    .ok_or_else(|| "an array dimension is not a non-negative int".to_string())
            })
            .collect(),
        other => Err(format!("the array's shape is a {}", other.kind())),
    }
}

/// Interprets a numpy array pickled by `ndarray.__reduce__` (protocols 2–4:
/// `_reconstruct(ndarray, (0,), b'b')` then `BUILD (version, shape, dtype, is_fortran,
/// raw)`) or `__reduce_ex__(5)` (`_frombuffer(buffer, dtype, shape, order)`).
fn array_of(v: &Value, input: &[u8]) -> Result<Array, String> {
    let obj = object(v).ok_or_else(|| format!("`data` is a {}, not a numpy array", v.kind()))?;
    if is_numpy(&obj.callable, "_reconstruct") {
        let state = obj
            .state
            .as_ref()
            .ok_or("a numpy array without its state")?;
        let items = tuple_items(state);
        // numpy writes (version, shape, dtype, is_fortran, raw); old files may omit version.
        let fields = match items.len() {
            5 => &items[1..],
            4 => items,
            n => return Err(format!("a numpy array state with {n} fields")),
        };
        let shape = shape_of(&fields[0])?;
        let dtype = dtype_of(&fields[1], input)?;
        let fortran = as_int(&fields[2]).ok_or("a numpy array without its order flag")? != 0;
        let payload = match &fields[3] {
            Value::Str(_) => return Err("a numpy array payload stored as text".into()),
            raw => as_bytes(raw).cloned().ok_or_else(|| {
                format!(
                    "the array's data is a {} (object arrays are not supported)",
                    raw.kind()
                )
            })?,
        };
        Ok(Array {
            dtype,
            shape,
            fortran,
            payload,
        })
    } else if is_numpy(&obj.callable, "_frombuffer") {
        let items = tuple_items(&obj.args);
        let [buffer, dtype, shape, order] = items else {
            return Err(format!("_frombuffer with {} arguments", items.len()));
        };
        let payload = as_bytes(buffer)
            .cloned()
            .ok_or("_frombuffer of a non-buffer")?;
        let order = as_text(order, input).ok_or("_frombuffer without an order")?;
        Ok(Array {
            dtype: dtype_of(dtype, input)?,
            shape: shape_of(shape)?,
            fortran: order == "F",
            payload,
        })
    } else {
        Err(format!(
            "`data` is made by `{}.{}`, not a numpy array",
            obj.callable.0, obj.callable.1
        ))
    }
}

/// An int, or a numpy integer scalar (`numpy.core.multiarray.scalar(dtype, bytes)`, what
/// `list(np_array)` pickles).
fn label_of(v: &Value, input: &[u8]) -> Result<i64, String> {
    if let Some(i) = as_int(v) {
        return Ok(i);
    }
    let obj = object(v)
        .filter(|o| is_numpy(&o.callable, "scalar"))
        .ok_or_else(|| format!("a label is a {}, not an int", v.kind()))?;
    let items = tuple_items(&obj.args);
    let [dtype, raw] = items else {
        return Err("a numpy scalar label with unexpected arguments".into());
    };
    let dtype = dtype_of(dtype, input)?;
    let raw = as_bytes(raw).ok_or("a numpy scalar label without bytes")?;
    let raw = bytes_of(raw, input);
    let (signed, width) = match dtype.trim_start_matches(['<', '|', '=']) {
        "i1" => (true, 1),
        "i2" => (true, 2),
        "i4" => (true, 4),
        "i8" => (true, 8),
        "u1" => (false, 1),
        "u2" => (false, 2),
        "u4" => (false, 4),
        "u8" => (false, 8),
        _ => return Err(format!("a label of dtype {dtype}; labels must be integers")),
    };
    if raw.len() != width {
        return Err("a numpy scalar label of the wrong size".into());
    }
    let mut buf = [0u8; 8];
    buf[..width].copy_from_slice(raw);
    if signed && raw[width - 1] & 0x80 != 0 {
        buf[width..].fill(0xff);
    }
    let v = i64::from_le_bytes(buf);
    if !signed && v < 0 {
        return Err("a label beyond the int64 range".into());
    }
    Ok(v)
}

/// Parses a pickle and returns its value's dict entries `data` and `labels`.
///
/// Takes the file's bytes by value: when the pixels are stored as one payload (all
/// protocols but Python 3's protocol 2), the buffer is reused for them, so reading a
/// file needs no more memory than the file itself.
pub fn read_dataset_pickle(input: Vec<u8>) -> Result<DatasetPickle, String> {
    let root = {
        let mut m = Machine {
            input: &input,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            memo_work: 0,
        };
        let root = m.run()?;
        if m.pos != input.len() {
            return Err(format!(
                "{} bytes after the end of the pickle (offset {})",
                input.len() - m.pos,
                m.pos
            ));
        }
        root
    };
    let Value::Dict(dict) = &root else {
        return Err(format!("the pickle holds a {}, not a dict", root.kind()));
    };
    let entry = |key: &str| {
        dict.items
            .iter()
            .rev()
            .find(|(k, _)| as_text(k, &input).as_deref() == Some(key))
            .map(|(_, v)| v)
    };
    let keys: Vec<String> = dict
        .items
        .iter()
        .map(|(k, _)| as_text(k, &input).unwrap_or_else(|| format!("<{}>", k.kind())))
        .collect();
    let missing = |key: &str| {
        format!(
            "the dict has no `{key}` entry (it has {keys:?}); a data-set pickle holds `data` \
             (numpy uint8 array) and `labels` (list of ints)"
        )
    };
    let data = entry("data").ok_or_else(|| missing("data"))?;
    let labels = entry("labels").ok_or_else(|| missing("labels"))?;
    let labels = match labels {
        Value::List(c) | Value::Tuple(c) => c
            .items
            .iter()
            .map(|v| label_of(v, &input))
            .collect::<Result<Vec<i64>, String>>()?,
        other => {
            return Err(format!(
                "`labels` is a {}; it must be a list of ints",
                other.kind()
            ))
        }
    };
    let array = array_of(data, &input)?;
    if array.dtype != "u1" {
        return Err(format!(
            "`data` has dtype `{}`; it must be uint8 (`u1`)",
            array.dtype
        ));
    }
    let shape: [usize; 4] = array.shape.as_slice().try_into().map_err(|_| {
        format!(
            "`data` has shape {:?}; it must be 4-D (N, S, S, 3)",
            array.shape
        )
    })?;
    let expected = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("`data`'s shape overflows")?;
    let payload_len = match &array.payload {
        Bytes::Input(r) => r.len(),
        Bytes::Owned(v) => v.len(),
    };
    if payload_len != expected {
        return Err(format!(
            "`data` has shape {shape:?} ({expected} bytes) but its payload holds {payload_len} \
             bytes"
        ));
    }
    if array.fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(
            "`data` is stored in Fortran order; re-save it with numpy.ascontiguousarray".into(),
        );
    }
    let data = match array.payload {
        Bytes::Owned(v) => {
            drop(root);
            Rc::try_unwrap(v).unwrap_or_else(|v| (*v).clone())
        }
        Bytes::Input(r) => {
            drop(root);
            let mut buf = input;
            buf.truncate(r.end);
            buf.drain(..r.start);
            buf
        }
    };
    Ok(DatasetPickle {
        data,
        shape,
        labels,
    })
}

/// Writes a data-set pickle as Python 3 with numpy 2 does at protocol 4 (without frames):
/// `{'data': uint8 array (N, S, S, 3), 'labels': [ints]}`. Python (numpy ≥ 1.26) and
/// [`read_dataset_pickle`] read it back.
pub fn write_dataset_pickle(data: &[u8], shape: [usize; 4], labels: &[i64]) -> Vec<u8> {
    fn short_str(out: &mut Vec<u8>, s: &str) {
        out.push(0x8c);
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
    fn int(out: &mut Vec<u8>, v: i64) {
        if (0..256).contains(&v) {
            out.extend_from_slice(&[b'K', v as u8]);
        } else if let Ok(v) = i32::try_from(v) {
            out.push(b'J');
            out.extend_from_slice(&v.to_le_bytes());
        } else {
            out.extend_from_slice(&[0x8a, 8]);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let mut out = Vec::with_capacity(data.len() + 64 + labels.len() * 5);
    out.extend_from_slice(&[0x80, 4, b'}', b'(']);
    short_str(&mut out, "data");
    short_str(&mut out, "numpy._core.multiarray");
    short_str(&mut out, "_reconstruct");
    out.push(0x93);
    short_str(&mut out, "numpy");
    short_str(&mut out, "ndarray");
    out.push(0x93);
    out.extend_from_slice(&[b'K', 0, 0x85, b'C', 1, b'b', 0x87, b'R']);
    // State: (1, shape, dtype('u1'), False, payload).
    out.extend_from_slice(&[b'(', b'K', 1, b'(']);
    for &d in &shape {
        int(&mut out, d as i64);
    }
    out.push(b't');
    short_str(&mut out, "numpy");
    short_str(&mut out, "dtype");
    out.push(0x93);
    short_str(&mut out, "u1");
    out.extend_from_slice(&[0x89, 0x88, 0x87, b'R', b'(', b'K', 3]);
    short_str(&mut out, "|");
    out.extend_from_slice(b"NNN");
    int(&mut out, -1);
    int(&mut out, -1);
    int(&mut out, 0);
    out.extend_from_slice(&[b't', b'b', 0x89]);
    if let Ok(n) = u32::try_from(data.len()) {
        out.push(b'B');
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        out.push(0x8e);
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    }
    out.extend_from_slice(data);
    out.extend_from_slice(b"tb");
    short_str(&mut out, "labels");
    out.push(b']');
    for chunk in labels.chunks(1000) {
        out.push(b'(');
        for &l in chunk {
            int(&mut out, l);
        }
        out.push(b'e');
    }
    out.extend_from_slice(b"u.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_pickle_reads_back() {
        let data: Vec<u8> = (0..2 * 2 * 2 * 3).map(|i| (i * 7) as u8).collect();
        let labels = vec![5, -3, 300, 1 << 40];
        let bytes = write_dataset_pickle(&data, [2, 2, 2, 3], &labels);
        let p = read_dataset_pickle(bytes).unwrap();
        assert_eq!(p.data, data);
        assert_eq!(p.shape, [2, 2, 2, 3]);
        assert_eq!(p.labels, labels);
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let mut bytes = vec![0x80, 2, b'N'];
        bytes.extend(vec![0x85; 10_000]);
        bytes.push(b'.');
        let err = read_dataset_pickle(bytes).unwrap_err();
        assert!(err.contains("nested deeper"), "{err}");
    }

    #[test]
    fn lying_lengths_are_errors_without_allocation() {
        // BINBYTES8 claiming 2^62 bytes.
        let mut bytes = vec![0x80, 4, 0x8e];
        bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
        let err = read_dataset_pickle(bytes).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
    }
}
