pub mod inspect;
pub fn run() -> i32 {
    0
}
