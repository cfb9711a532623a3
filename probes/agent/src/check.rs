//! Loads every program of a user's object on its own (`bpfmatrix check`) and
//! reports, per program, what the kernel said and what verifying it cost.
